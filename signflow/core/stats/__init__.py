"""Turnaround statistics for the people who run the service (the manager role): how
fast requests are paged, opened, signed, delivered and acknowledged, per on-call group
and urgency over a period. Aggregates only, computed in SQL: never a document, a
request's title or a person's name."""
