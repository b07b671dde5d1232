"""A job queue: producers push through one router, workers block with
BRPOP on another; every job is processed exactly once.

Usage: job_queue.py PRODUCER_ROUTER WORKER_ROUTER
"""

import threading

from shoalpy import client, done, eq

JOBS, WORKERS, PRODUCERS = 300, 4, 2
queue, results = "py:jobs", "py:jobs:done"
producer = client(1)
producer.delete(queue, results)
taken = [[] for _ in range(WORKERS)]
errors = []


def work(i):
    try:
        w = client(2)
        while True:
            item = w.brpop([queue], timeout=0)
            if item is None:
                errors.append(f"worker {i}: BRPOP 0 returned nil")
                return
            _, job = item
            if job == "stop":
                return
            taken[i].append(job)
            # The result goes back through the worker's router.
            w.hset(results, job, f"worker{i}")
    except Exception as e:
        errors.append(f"worker {i}: {e!r}")


workers = [threading.Thread(target=work, args=(i,)) for i in range(WORKERS)]
for t in workers:
    t.start()


def produce(j):
    try:
        c = client(1)
        for n in range(j, JOBS, PRODUCERS):
            c.lpush(queue, f"job{n}")
    except Exception as e:
        errors.append(f"producer {j}: {e!r}")


producers = [threading.Thread(target=produce, args=(j,)) for j in range(PRODUCERS)]
for t in producers:
    t.start()
for t in producers:
    t.join()
for _ in range(WORKERS):
    producer.lpush(queue, "stop")
for t in workers:
    t.join(120)
    if t.is_alive():
        errors.append("a worker is still blocked after 120 s")
eq(errors, [], "errors")
everything = [j for w in taken for j in w]
eq(len(everything), JOBS, "jobs taken (a job lost or taken twice)")
eq(set(everything), {f"job{n}" for n in range(JOBS)}, "the jobs taken")
eq(producer.hlen(results), JOBS, "results recorded")
busy = sum(1 for w in taken if w)
eq(busy >= 2, True, f"jobs spread over workers ({[len(w) for w in taken]})")
eq(producer.llen(queue), 0, "queue drained")
producer.delete(results)
done()
