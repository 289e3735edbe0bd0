"""The tools around the queue: what people run, not what the course teaches.

- :mod:`~pgqueue_lab.tools.cli` - the ``pgqueue-lab`` command (a thin dispatcher)
- :mod:`~pgqueue_lab.tools.demo` and :mod:`~pgqueue_lab.tools.handlers` - the seed's walk-through
  and its handlers
- :mod:`~pgqueue_lab.tools.serve`, :mod:`~pgqueue_lab.tools.enqueue`,
  :mod:`~pgqueue_lab.tools.control` - ``worker``, ``enqueue``, ``cancel``/``pause``/``resume``
- :mod:`~pgqueue_lab.tools.watch` - the live view of a queue (notebook 10)
- :mod:`~pgqueue_lab.tools.terminal` - commands started from a notebook, a queue that must exist
- :mod:`~pgqueue_lab.tools.classroom` - a class on one server: a role and a database per student
- :mod:`~pgqueue_lab.tools.course`, :mod:`~pgqueue_lab.tools.check`,
  :mod:`~pgqueue_lab.tools.pytest_plugin` - copy the course, check it under strict nbval
- :mod:`~pgqueue_lab.tools.report` - the queue's state as pandas DataFrames (the notebooks)
"""
