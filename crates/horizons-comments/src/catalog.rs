//! The catalog of the ngVLA archive: one row per archived run (observation, field, time range,
//! frequencies, restoring beam, rms, peak and its position, where the products are), written by
//! the archive stage, marked delivered by the delivery (SRDP) stage, and read by the portal's
//! `/api/products` routes.
//!
//! Inserts are idempotent by run id: the archive stage is at-least-once (a run whose completing
//! delivery comes again is archived again), and the second insert of a run changes nothing.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{CommentsError, Store};

/// One archived run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ProductRow {
    /// The run id (UUIDv7, from ingest).
    pub run: String,
    /// The observation id.
    pub observation: String,
    /// The field (source name).
    pub object: String,
    /// The telescope.
    pub telescope: String,
    /// Mid-time of the first integration, seconds since MJD 0 (UTC).
    pub time_start_mjd_s: f64,
    /// Mid-time of the last integration, seconds since MJD 0.
    pub time_end_mjd_s: f64,
    /// Lowest channel frequency, Hz.
    pub freq_min_hz: f64,
    /// Highest channel frequency, Hz.
    pub freq_max_hz: f64,
    /// Phase centre right ascension, degrees.
    pub ra_deg: f64,
    /// Phase centre declination, degrees.
    pub dec_deg: f64,
    /// Restoring beam major axis (FWHM), arcseconds.
    pub bmaj_arcsec: f64,
    /// Restoring beam minor axis (FWHM), arcseconds.
    pub bmin_arcsec: f64,
    /// Restoring beam position angle, degrees east of north.
    pub bpa_deg: f64,
    /// rms of the residual image, Jy/beam.
    pub rms: f64,
    /// Brightest pixel of the restored image, Jy/beam.
    pub peak: f64,
    /// Its right ascension, degrees.
    pub peak_ra_deg: f64,
    /// Its declination, degrees.
    pub peak_dec_deg: f64,
    /// Fraction of the data flagged by the flagger or missing.
    pub flag_fraction: f64,
    /// The run's products directory on the archive host.
    pub products_dir: String,
    /// When the row was written, ms since the Unix epoch.
    pub created_at: i64,
    /// When the delivery stage delivered the run (thumbnail and manifest written, announced),
    /// ms since the Unix epoch; `None` until then. [`insert`] ignores it: only
    /// [`mark_delivered`] sets it.
    pub delivered_at: Option<i64>,
}

/// The columns [`insert`] writes: those of a [`ProductRow`] but the last, `delivered_at`.
macro_rules! inserted {
    () => {
        "run, observation, object, telescope, time_start_mjd_s, time_end_mjd_s, freq_min_hz, freq_max_hz, \
         ra_deg, dec_deg, bmaj_arcsec, bmin_arcsec, bpa_deg, rms, peak, peak_ra_deg, peak_dec_deg, \
         flag_fraction, products_dir, created_at"
    };
}

/// The columns of a [`ProductRow`], in its order.
const COLUMNS: &str = concat!(inserted!(), ", delivered_at");

fn row_from(r: &AnyRow) -> ProductRow {
    ProductRow {
        run: r.get(0),
        observation: r.get(1),
        object: r.get(2),
        telescope: r.get(3),
        time_start_mjd_s: r.get(4),
        time_end_mjd_s: r.get(5),
        freq_min_hz: r.get(6),
        freq_max_hz: r.get(7),
        ra_deg: r.get(8),
        dec_deg: r.get(9),
        bmaj_arcsec: r.get(10),
        bmin_arcsec: r.get(11),
        bpa_deg: r.get(12),
        rms: r.get(13),
        peak: r.get(14),
        peak_ra_deg: r.get(15),
        peak_dec_deg: r.get(16),
        flag_fraction: r.get(17),
        products_dir: r.get(18),
        created_at: r.get(19),
        delivered_at: r.get(20),
    }
}

/// Records `row` unless its run is recorded already; returns whether this call inserted it.
/// Non-finite numbers are refused (neither engine round-trips them the same way).
pub async fn insert(store: &Store, row: &ProductRow) -> Result<bool, CommentsError> {
    let numbers = [
        ("time_start_mjd_s", row.time_start_mjd_s),
        ("time_end_mjd_s", row.time_end_mjd_s),
        ("freq_min_hz", row.freq_min_hz),
        ("freq_max_hz", row.freq_max_hz),
        ("ra_deg", row.ra_deg),
        ("dec_deg", row.dec_deg),
        ("bmaj_arcsec", row.bmaj_arcsec),
        ("bmin_arcsec", row.bmin_arcsec),
        ("bpa_deg", row.bpa_deg),
        ("rms", row.rms),
        ("peak", row.peak),
        ("peak_ra_deg", row.peak_ra_deg),
        ("peak_dec_deg", row.peak_dec_deg),
        ("flag_fraction", row.flag_fraction),
    ];
    if let Some((name, v)) = numbers.iter().find(|(_, v)| !v.is_finite()) {
        return Err(CommentsError::invalid("product", format!("{name} of run {} is {v}", row.run)));
    }
    let sql = concat!(
        "INSERT INTO products (",
        inserted!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) \
         ON CONFLICT (run) DO NOTHING"
    );
    let mut q = sqlx::query(sql)
        .bind(row.run.as_str())
        .bind(row.observation.as_str())
        .bind(row.object.as_str())
        .bind(row.telescope.as_str());
    for (_, v) in numbers {
        q = q.bind(v);
    }
    let mut tx = store.begin().await.map_err(|e| CommentsError::db("starting a catalog write", e))?;
    let inserted = q
        .bind(row.products_dir.as_str())
        .bind(row.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| CommentsError::db(format!("recording the products of run {}", row.run), e))?
        .rows_affected()
        == 1;
    tx.commit().await.map_err(|e| CommentsError::db("committing a catalog write", e))?;
    Ok(inserted)
}

/// Marks `run` delivered at `at_ms` unless it is already (the first time stays). A run with no
/// row is an error: the archive stage records a run before delivery sees it.
pub async fn mark_delivered(store: &Store, run: &str, at_ms: i64) -> Result<(), CommentsError> {
    let found = sqlx::query("UPDATE products SET delivered_at = COALESCE(delivered_at, $2) WHERE run = $1")
        .bind(run)
        .bind(at_ms)
        .execute(store.pool())
        .await
        .map_err(|e| CommentsError::db(format!("marking run {run} delivered"), e))?
        .rows_affected();
    if found == 0 {
        return Err(CommentsError::not_found("product", run));
    }
    Ok(())
}

/// The row of `run`.
pub async fn get(store: &Store, run: &str) -> Result<ProductRow, CommentsError> {
    let sql = format!("SELECT {COLUMNS} FROM products WHERE run = $1");
    let row = sqlx::query(&sql)
        .bind(run)
        .fetch_optional(store.pool())
        .await
        .map_err(|e| CommentsError::db("reading the catalog", e))?;
    row.as_ref().map(row_from).ok_or_else(|| CommentsError::not_found("product", run))
}

/// Rows newest first (run ids are time-ordered), optionally of one observation, `limit` of them
/// after skipping `offset`.
pub async fn list(
    store: &Store,
    observation: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Vec<ProductRow>, CommentsError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM products WHERE ($1 = '' OR observation = $1) ORDER BY run DESC LIMIT $2 OFFSET $3"
    );
    let rows = sqlx::query(&sql)
        .bind(observation.unwrap_or(""))
        .bind(limit.clamp(1, 10_000))
        .bind(offset.max(0))
        .fetch_all(store.pool())
        .await
        .map_err(|e| CommentsError::db("listing the catalog", e))?;
    Ok(rows.iter().map(row_from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn row(run: &str, observation: &str) -> ProductRow {
        ProductRow {
            run: run.into(),
            observation: observation.into(),
            object: "J1008+0730".into(),
            telescope: "EVLA".into(),
            time_start_mjd_s: 4_779_303_716.0,
            time_end_mjd_s: 4_779_304_075.0,
            freq_min_hz: 36.0e9,
            freq_max_hz: 36.128e9,
            ra_deg: 152.000_066_667_6,
            dec_deg: 7.504_597_780_065,
            bmaj_arcsec: 2.78,
            bmin_arcsec: 1.79,
            bpa_deg: -42.5,
            rms: 0.001_234_567_890_123,
            peak: 1.0 / 3.0,
            peak_ra_deg: 152.0001,
            peak_dec_deg: 7.5046,
            flag_fraction: 0.0625,
            products_dir: format!("/data/products/{observation}/run-{run}"),
            created_at: 1_700_000_000_000,
            delivered_at: None,
        }
    }

    #[tokio::test]
    async fn a_row_is_recorded_once_and_reads_back_exactly() {
        let (_dir, store) = crate::store::sqlite_for_tests().await;
        recorded_once_and_read_back_exactly(store).await;
    }

    #[tokio::test]
    async fn a_row_is_recorded_once_and_reads_back_exactly_on_postgres() {
        recorded_once_and_read_back_exactly(crate::store::fresh_postgres_for_tests("hz_catalog").await).await;
    }

    async fn recorded_once_and_read_back_exactly(store: Store) {
        let r = row("0190a", "obs-1");
        assert!(insert(&store, &r).await.unwrap(), "the first insert records the run");
        let again = ProductRow { rms: 9.0, ..r.clone() };
        assert!(!insert(&store, &again).await.unwrap(), "a redelivered run is not recorded twice");
        assert_eq!(get(&store, "0190a").await.unwrap(), r, "floats round-trip exactly; the first row stays");
        assert_eq!(list(&store, None, 100, 0).await.unwrap().len(), 1);
        let err = get(&store, "nope").await.unwrap_err();
        assert!(matches!(err, CommentsError::NotFound { .. }), "{err}");
        // Delivery marks the row once; the first time stays.
        mark_delivered(&store, "0190a", 1_700_000_000_500).await.unwrap();
        mark_delivered(&store, "0190a", 1_700_000_009_000).await.unwrap();
        assert_eq!(get(&store, "0190a").await.unwrap().delivered_at, Some(1_700_000_000_500));
        let err = mark_delivered(&store, "nope", 1).await.unwrap_err();
        assert!(matches!(err, CommentsError::NotFound { .. }), "{err}");
    }

    #[tokio::test]
    async fn listing_filters_by_observation_and_pages_newest_first() {
        let (_dir, store) = crate::store::sqlite_for_tests().await;
        for (run, obs) in [("0190a", "obs-1"), ("0190b", "obs-2"), ("0190c", "obs-1"), ("0190d", "obs-1")] {
            insert(&store, &row(run, obs)).await.unwrap();
        }
        let runs = |rows: Vec<ProductRow>| rows.into_iter().map(|r| r.run).collect::<Vec<_>>();
        assert_eq!(runs(list(&store, None, 100, 0).await.unwrap()), ["0190d", "0190c", "0190b", "0190a"]);
        assert_eq!(runs(list(&store, Some("obs-1"), 2, 0).await.unwrap()), ["0190d", "0190c"]);
        assert_eq!(runs(list(&store, Some("obs-1"), 2, 2).await.unwrap()), ["0190a"]);
        assert!(list(&store, Some("obs-3"), 10, 0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn non_finite_numbers_are_refused() {
        let (_dir, store) = crate::store::sqlite_for_tests().await;
        let err = insert(&store, &ProductRow { rms: f64::NAN, ..row("0190a", "o") }).await.unwrap_err();
        assert!(err.to_string().contains("rms of run 0190a is NaN"), "{err}");
    }
}
