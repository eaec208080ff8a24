"""Every `ragserve` command, and the process that `ragserve serve` runs (start
Ray, deploy, wait, stop)."""
