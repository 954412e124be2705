import NIOPosix

/// The per-thread values the gateway keeps for each event loop (the relay's scratch list, the
/// deferred flushes, the masking keys) are made at their thread's first use.
extension ThreadSpecificVariable {
    /// This thread's value, made by `make` the first time it is asked for on the thread.
    func current(orMake make: () -> Value) -> Value {
        if let value = currentValue { return value }
        let value = make()
        currentValue = value
        return value
    }
}
