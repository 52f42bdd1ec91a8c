"""Prometheus metrics (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_SECONDS = Histogram(
    "creamfl_http_request_seconds",
    "HTTP request latency",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
UPLOADS = Counter("creamfl_uploads_total", "uploads by outcome: created, repeat, disconnected", ["modality", "outcome"])
UPLOAD_BYTES = Counter("creamfl_upload_bytes_total", "bytes of accepted uploads")
DOWNLOAD_BYTES = Counter("creamfl_download_bytes_total", "bytes of global representations served (full downloads)")
JOB_SECONDS = Histogram(
    "creamfl_job_seconds", "job run time", ["kind"], buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
)
JOBS_FINISHED = Counter("creamfl_jobs_finished_total", "jobs committed or failed for good", ["kind", "state"])
ROUNDS_BY_STATE = Gauge("creamfl_rounds", "rounds by state", ["state"])
LONG_POLLS = Gauge("creamfl_long_polls_waiting", "clients waiting in tasks/next")
