"""Running training jobs: the job book, the executor seam and its two executors.

``book`` keeps jobs on the store and is the one place their state changes; ``fence`` keeps a
stopped job from publishing; ``local`` and ``kubernetes`` are the executors; ``job_process``
is the process that trains one job under either of them.
"""
