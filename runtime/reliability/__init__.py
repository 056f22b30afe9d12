"""Reliability checks of the runtime, runnable on a deployment machine (torch-free), shared with the tests.

- :mod:`.fuzz`: hostile images may only raise ``FacedermInputError`` (``python -m facederm.runtime.reliability.fuzz``).
- :mod:`.leak`: many predictions must not grow resident memory (``python -m facederm.runtime.reliability.leak``).
- :mod:`.stream`: ``facederm-predict --json DIR`` streams a folder (``python -m facederm.runtime.reliability.stream``).
"""
