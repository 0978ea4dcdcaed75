"""The embedded local stack and the test machinery; never in the production image.

- ``embedded``   a private PostgreSQL cluster and the Tansu broker (the local stack, tests)
- ``testing``    pytest fixtures on that infrastructure (or containers, where Docker exists)
- ``sandbox``    the WeChat Pay and Mollie sandboxes; ``mailsink`` the SMTP sink
- the process runner, dev keys and tokens, and compose's secrets
"""
