"""The grid job (job.py: files, resume, what each point computes), which rank computes which point
(scheduler.py), and the lock that keeps two runs off one surface file (lock.py)."""
