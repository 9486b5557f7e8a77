"""The deploy side of PEM: pre-processing, fusion and outputs in numpy (never torch, never pem's model)."""
