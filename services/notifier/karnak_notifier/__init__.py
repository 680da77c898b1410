"""The notifier: one email per study and destination, summarising the transfers of an interval window."""
