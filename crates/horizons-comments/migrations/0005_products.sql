-- The ngVLA archive's catalog: one row per archived run, written by the archive stage once the
-- run's products directory is in place. Keyed by the run id, so a redelivered run is recorded
-- once. Times are seconds since MJD 0, frequencies Hz, angles degrees or arcseconds as named.

CREATE TABLE products (
    run             TEXT PRIMARY KEY,
    observation     TEXT NOT NULL,
    object          TEXT NOT NULL,
    telescope       TEXT NOT NULL,
    time_start_mjd_s DOUBLE PRECISION NOT NULL,
    time_end_mjd_s  DOUBLE PRECISION NOT NULL,
    freq_min_hz     DOUBLE PRECISION NOT NULL,
    freq_max_hz     DOUBLE PRECISION NOT NULL,
    ra_deg          DOUBLE PRECISION NOT NULL,
    dec_deg         DOUBLE PRECISION NOT NULL,
    bmaj_arcsec     DOUBLE PRECISION NOT NULL,
    bmin_arcsec     DOUBLE PRECISION NOT NULL,
    bpa_deg         DOUBLE PRECISION NOT NULL,
    rms             DOUBLE PRECISION NOT NULL,
    peak            DOUBLE PRECISION NOT NULL,
    peak_ra_deg     DOUBLE PRECISION NOT NULL,
    peak_dec_deg    DOUBLE PRECISION NOT NULL,
    flag_fraction   DOUBLE PRECISION NOT NULL,
    products_dir    TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX products_by_observation ON products (observation, created_at);
