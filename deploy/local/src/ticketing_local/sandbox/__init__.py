"""Local emulators of the payment providers (WeChat Pay v3, Mollie v2) for the local stack and tests."""
