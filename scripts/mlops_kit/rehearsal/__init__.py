"""Rehearsal: run a GoCD pipeline config on this machine as GoCD would, before it reaches the server.

May import: ``core``, ``envs``, ``run``.

* ``gocd``: a pipeline config as typed records (pipelines, stages, jobs, tasks, artifacts, variables, the label);
* ``gocd_xml``: the config file as XML: decoded as it declares, no DTD, validated against GoCD's schema (its XSD
  ships beside it), every element with its line and column;
* ``gocd_rules``: GoCD's server config rules, with GoCD's messages (names, timeouts, fetches, paths, labels);
* ``gocd_reader``: the XML read into the records, refusing what a rehearsal cannot emulate;
* ``settings``: how this machine differs from an agent (repository, state folder, overrides, defaults);
* ``workspace``: a job's working copy of the repository;
* ``tasks``: running one task as an agent does (runif, exec without a shell, commands that cannot start);
* ``job``: one job: its console and console log, timeout, cancel, what it leaves running, what it publishes;
* ``schedule``: the run: stages in order, the jobs of a stage in parallel, Ctrl-C and SIGTERM;
* ``statedir``: its state folder (counters, run markers, pruning);
* ``jobenv``: a job's environment, as an agent builds it;
* ``artifacts``: publishing and fetching artifacts;
* ``report``: what it prints (the plan, the summary, where the results are).
"""
