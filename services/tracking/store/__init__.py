"""The tracking schema's tables and queries (nothing else touches them), one module per area.

    schema       the metadata and the idempotency table
    salts        the daily IP-hash salts every replica shares
    interactions ingestion's group-commit writer: de-duplication, client ids, counters
    posts        posts
    shares       shares, the per-IP rate limit's reads and writes, share statistics
    analytics    engagement summary, trends, funnels, top products
    aggregation  the aggregation job: rollups, popularity scores, co-occurrence pairs
    popularity   reading scores, pairs and recommendations
    retention    purging raw events after their retention

Functions take an open connection (the caller owns the transaction) and return records
(`services.tracking.records`). Hot-path writes (interactions, de-duplication) go straight
to psycopg with array parameters: one multi-row statement per group commit.
"""
