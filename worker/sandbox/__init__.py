"""A local venue for tests and demos: the Binance spot REST subset the live executor uses, with a
simple matching model, seeded fault injection and a ledger of everything it was asked to do."""
