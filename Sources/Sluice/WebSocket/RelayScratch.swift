import NIOPosix

/// The list a read's relay outputs are collected in, one per thread (so one per event loop)
/// instead of one per relay: an idle relay then holds none of it. A read takes the thread's
/// list once (`current`, then `take`) and gives it back when done; a read handled inside
/// another's outputs finds it taken and gets an empty list of its own.
final class RelayScratch {
    /// Each loop's thread reads and writes only its own value, which is why the unchecked
    /// access is safe.
    nonisolated(unsafe) private static let perThread = ThreadSpecificVariable<RelayScratch>()

    private var outputs: [RelayDirection.Output] = []

    private init() {
        outputs.reserveCapacity(16)
    }

    /// This thread's scratch (one thread-local lookup per read).
    static var current: RelayScratch {
        perThread.current { RelayScratch() }
    }

    /// The list, emptied; give it back with `give(_:)`.
    func take() -> [RelayDirection.Output] {
        var taken: [RelayDirection.Output] = []
        swap(&taken, &outputs)
        return taken
    }

    /// Returns a list taken with `take()`, keeping its capacity for the thread's next read.
    func give(_ list: inout [RelayDirection.Output]) {
        guard list.capacity > outputs.capacity else { return }
        list.removeAll(keepingCapacity: true)
        swap(&list, &outputs)
    }
}
