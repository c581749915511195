"""Chain cycles, refused over the whole catalog: a job whose ``on_success`` /
``on_failure`` links lead back to itself would start runs for ever.

Every job on a cycle is made invalid with the cycle spelled out. Links to jobs that are
not in the catalog are not an error here (another root may provide them later); a run
that follows one is recorded ``rejected`` with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping

from jobhost.catalog.entry import Job


def _edges(jobs: Mapping[str, Job]) -> dict[str, list[str]]:
    edges: dict[str, list[str]] = {}
    for job_id, job in jobs.items():
        definition = job.definition
        if definition is None or not (definition.on_success or definition.on_failure):
            continue
        targets = [link.job for link in (*definition.on_success, *definition.on_failure)]
        edges[job_id] = sorted({t for t in targets if t in jobs})
    return edges


def _cycle_through(start: str, edges: Mapping[str, list[str]]) -> list[str] | None:
    """The shortest path start → … → start, or None."""
    paths: dict[str, list[str]] = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in edges.get(node, ()):
                if target == start:
                    return [*paths[node], start]
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    return None


def refuse_cycles(jobs: dict[str, Job], sources: Mapping[str, str]) -> dict[str, Job]:
    """``jobs`` with every job on a chain cycle made invalid (an error naming the cycle);
    ``sources`` names each job's job.json as messages show it."""
    edges = _edges(jobs)
    if not edges:
        return jobs
    for job_id in sorted(edges):
        cycle = _cycle_through(job_id, edges)
        if cycle is None:
            continue
        job = jobs[job_id]
        message = (
            f"{sources.get(job_id, job_id)}: on_success/on_failure form a cycle: "
            f"{' → '.join(cycle)}; a chain must end"
        )
        jobs[job_id] = job.replace(errors=(*job.errors, message))
    return jobs
