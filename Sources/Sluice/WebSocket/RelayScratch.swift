import NIOPosix

/// The list a read's relay outputs are collected in, one per thread (so one per event loop)
/// instead of one per relay: an idle relay then holds none of it. A call that finds it taken
/// (a read handled inside another's outputs) gets an empty list of its own.
final class RelayScratch {
    /// Each loop's thread reads and writes only its own value, which is why the unchecked
    /// access is safe.
    nonisolated(unsafe) private static let perThread = ThreadSpecificVariable<RelayScratch>()

    private var outputs: [RelayDirection.Output] = []

    private init() {
        outputs.reserveCapacity(16)
    }

    /// This thread's list, emptied; give it back with `give(_:)`.
    static func take() -> [RelayDirection.Output] {
        guard let scratch = perThread.currentValue else {
            perThread.currentValue = RelayScratch()
            return take()
        }
        var outputs: [RelayDirection.Output] = []
        swap(&outputs, &scratch.outputs)
        return outputs
    }

    /// Returns a list taken with `take()`, keeping its capacity for the thread's next read.
    static func give(_ outputs: inout [RelayDirection.Output]) {
        guard let scratch = perThread.currentValue, outputs.capacity > scratch.outputs.capacity else { return }
        outputs.removeAll(keepingCapacity: true)
        swap(&outputs, &scratch.outputs)
    }
}
