"""The bundled sample and its generator. A regular package, so that no installed top-level
`examples` package (binance-connector ships one) can shadow it."""
