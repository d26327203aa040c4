-- When the delivery stage (SRDP) delivered a run: its thumbnail and manifest are in its
-- products directory and it was announced on the srdp topic. NULL until then; the first time
-- stays when a run is delivered again. Milliseconds since the Unix epoch.

ALTER TABLE products ADD COLUMN delivered_at BIGINT;
