"""Generated Python modules of the gRPC contracts in proto/corridor/v1 (`make proto`); do not edit."""
