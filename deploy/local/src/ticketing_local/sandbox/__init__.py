"""Local emulators of the payment providers (WeChat Pay v3, …) for the local stack and tests."""
