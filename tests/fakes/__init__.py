"""Fakes of Windows-only things (py.exe, pyenv-win layout) built from their documented behaviour."""
