"""Data stages: demo site, scrape, extract, clean, dedup (PII and tokens come later)."""
