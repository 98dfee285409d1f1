"""The job lifecycle: admit, queue, store, hand tickets to a GPU backend, record outcomes.

Knows no Discord (a test checks it): the bot tells it about jobs and is told about results
through a sink. Builds on ``engine`` (tickets, events), never the reverse.
"""
