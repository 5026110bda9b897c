"""A client for the Binance spot REST order API, and the live executor built on it."""
