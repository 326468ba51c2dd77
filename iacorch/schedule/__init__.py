"""Schedules: cron math, the jobs a runbook declares, the foreground scheduler, exports."""
