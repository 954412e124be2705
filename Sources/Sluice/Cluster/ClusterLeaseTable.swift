/// What this instance holds in the cluster, by its own account: the truth Redis is brought back
/// to after an outage. A value type with no I/O, kept on the cluster store's event loop.
///
/// A lease is `pending` from the moment its admission is sent until Redis answers, then `held`.
/// Whenever the instance and Redis may disagree (an admission or release whose answer never
/// came, a reconnect, the first contact of a process that reuses an instance id), the table is
/// marked for reconciliation: the next heartbeat sends the whole table instead of renewing.
struct ClusterLeaseTable {
    enum Phase: Equatable {
        case pending
        case held
    }

    struct Entry: Equatable {
        /// The JSON record Redis keeps: the keys the lease counts in and the connection's summary.
        var record: String
        var phase: Phase
    }

    private(set) var entries: [String: Entry] = [:]
    /// The next heartbeat must reconcile rather than renew.
    private(set) var needsReconcile = true
    private var nextNumber: UInt64 = 0
    /// Bumped at each reason to reconcile, so a reconciliation that was already on its way
    /// when a new reason came does not clear it.
    private(set) var generation: UInt64 = 0

    /// A fresh lease id: `<instance>/<n>`, never reused by this process.
    mutating func makeID(instance: String) -> String {
        nextNumber += 1
        return "\(instance)/\(nextNumber)"
    }

    /// An admission is on its way to Redis.
    mutating func sent(_ id: String, record: String) {
        entries[id] = Entry(record: record, phase: .pending)
    }

    /// Redis counted it, or the failure policy admitted it without Redis (`confirmedByRedis`
    /// false: Redis must be told at the next reconciliation).
    mutating func held(_ id: String, confirmedByRedis: Bool) {
        entries[id]?.phase = .held
        if !confirmedByRedis { markForReconcile() }
    }

    /// Refused (by Redis or by the policy) or closed: the lease is no longer this instance's.
    /// `confirmedByRedis` false: Redis may still count it until the next reconciliation.
    mutating func dropped(_ id: String, confirmedByRedis: Bool) {
        entries.removeValue(forKey: id)
        if !confirmedByRedis { markForReconcile() }
    }

    /// A connection was lost or an answer never came.
    mutating func markForReconcile() {
        needsReconcile = true
        generation += 1
    }

    /// What the reconcile script is sent: ids Redis keeps only if it already has them (answers
    /// still on their way), and the leases held with their records.
    func reconcileArguments() -> (keep: [String], held: [(id: String, record: String)]) {
        var keep: [String] = []
        var held: [(id: String, record: String)] = []
        for (id, entry) in entries.sorted(by: { $0.key < $1.key }) {
            switch entry.phase {
            case .pending: keep.append(id)
            case .held: held.append((id, entry.record))
            }
        }
        return (keep, held)
    }

    /// Redis now holds exactly the table as it was sent at `generation`.
    mutating func reconciled(at generation: UInt64) {
        if generation == self.generation { needsReconcile = false }
    }

    var heldCount: Int { entries.values.count { $0.phase == .held } }
}
