"""The core: the queue and the worker the course teaches, and exactly what they need.

Read it in this order (notebook 00 onwards; :mod:`pgqueue_lab.errors` first, 66 lines):

1. :mod:`~pgqueue_lab.core.validate` - bad input stops here, before anything reaches the database
2. :mod:`~pgqueue_lab.core.sql` - every statement of the queue, top to bottom (``print(sql.CLAIM)``)
3. :mod:`~pgqueue_lab.core.db` - where the database comes from, and :func:`connect`
4. :mod:`~pgqueue_lab.core.queue` - create, enqueue, claim, complete, fail, release, heartbeat,
   rescue, wait: one method per statement, with the claim token that fences late writes
5. :mod:`~pgqueue_lab.core.holdings` - what a worker holds until each outcome is recorded
6. :mod:`~pgqueue_lab.core.worker` - threads running handlers, a heartbeat, a housekeeper

The core imports nothing from :mod:`pgqueue_lab.features`: the features plug into two
documented extension points, :class:`~pgqueue_lab.core.queue.QueueExtensions` and
:class:`~pgqueue_lab.core.worker.Extension`.
"""
