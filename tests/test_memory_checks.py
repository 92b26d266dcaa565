"""How much memory one Ray actor of a search can count on (issue 27, item 1: the batch-memory
check on Ray searches; the refusals themselves are in tests/test_bad_inputs.py, BEFORE_WRITING)."""

from __future__ import annotations

from tfg_search.run.validate import ray_actor_memory

GIB = 2**30


def test_one_actor_gets_its_share_of_the_node_where_it_gets_most() -> None:
    nodes = [{"CPU": 8.0, "GPU": 2.0, "memory": 16.0 * GIB}, {"CPU": 2.0, "memory": 12.0 * GIB}]
    free, share = ray_actor_memory(nodes, 1, 0, None)
    assert free == 6 * GIB  # 2 actors on the small node
    assert share == (
        " to each of the 2 actors of a node (2 CPUs, --cpus-per-trial 1: fewer --workers or more "
        "--cpus-per-trial give each more)"
    )
    assert ray_actor_memory(nodes, 1, 0, 1) == (16 * GIB, "")  # one worker: a whole node
    assert ray_actor_memory(nodes, 4, 0, None)[0] == 8 * GIB  # 2 actors of 4 CPUs; none on 2 CPUs
    assert ray_actor_memory(nodes, 1, 0.5, None)[0] == 4 * GIB  # 4 GPU actors, on the GPU node only
    assert ray_actor_memory(nodes, 16, 0, None)[0] == 0  # an actor fits no node
