"""Generated gRPC stubs (python -m server.generate_stubs); do not edit."""
