//! FITS, written for this crate: header cards, binary tables, and the image writer/reader used
//! by the archive stage. Random-groups uv data builds on these in [`crate::uvfits`].
//!
//! Why not a FITS crate: none reads random groups safely (see BRIEF), and what we need is small
//! enough to own and test — every length is checked before it is used, so a bad file is an error.

pub mod bintable;
pub mod header;
pub mod image;

pub use bintable::BinTable;
pub use header::{Header, HeaderWriter, Value, BLOCK};
pub use image::{read_image, write_image, FitsImage, ImageMeta};
