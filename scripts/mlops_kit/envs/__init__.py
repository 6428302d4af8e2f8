"""Envs: a stage's environment, from its spec to a verified venv with a registered Jupyter kernel.

May import: ``core``.

* ``spec``: the stage spec (``specs/<stage>.yaml``), strictly parsed;
* ``lockfile``: the stage lock file format (read, sealed against hand edits, fresh, pins per platform);
* ``resolution``: resolving a spec into its lock with uv (universal, hashed, installable everywhere);
* ``locked_install``: installing exactly a lock into a venv and verifying the venv against it;
* ``probe``: asking another interpreter a question (a small script, a JSON answer);
* ``interpreters``: finding the Python a spec asks for;
* ``pyinstall``: installing a missing Python with the platform's installer (``--install-python``);
* ``managed``: downloading a missing Python through uv (the toolkit's folder, the policy, the download's record);
* ``installers``: uv/pip commands, package indexes, freeze files;
* ``build``: the venv build and cache (build lock, health check, reuse);
* ``audit``: the ``env.json`` record and the audit bundle;
* ``kernel``: Jupyter kernelspecs for stage venvs.
"""
