-- The inbox is pruned by age (portal.inbox_retention): an index so the pruning does not scan.

CREATE INDEX inbox_by_age ON inbox (processed_at);
