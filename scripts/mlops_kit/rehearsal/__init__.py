"""Rehearsal: run a GoCD pipeline config on this machine as GoCD would, before it reaches the server.

May import: ``core``, ``envs``, ``run``.

* ``gocd``: the config XML read into typed records, with the server's config rules;
* ``engine``: the rehearsal itself (working copies, tasks, parallel jobs, timeouts, stages in order);
* ``statedir``: its state folder (counters, run markers, pruning);
* ``jobenv``: a job's environment, as an agent builds it;
* ``artifacts``: publishing and fetching artifacts;
* ``report``: what it prints (the plan, the summary, where the results are).
"""
