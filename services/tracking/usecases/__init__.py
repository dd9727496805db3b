"""The tracking service's use cases: the calls that coordinate several steps.

    ingestion  from a call's interaction messages to committed events (the hot path)
    shares     a share: the post's state, the address's sliding-hour limit, the count

The servicer translates proto and raises; the store only speaks SQL.
"""
