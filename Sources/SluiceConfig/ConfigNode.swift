import Yams

/// A strict reader over one YAML node that knows its key path.
///
/// Every accessor names the path in its error, and `MappingReader.finish()` rejects keys nobody
/// asked for, so a typo in the config is an error rather than a silently ignored setting.
struct ConfigNode {
    let node: Node
    let path: String

    var line: Int? { node.mark?.line }

    func error(_ message: String) -> ConfigError {
        ConfigError(path: path, line: line, message: message)
    }

    var isNull: Bool {
        if case .scalar(let scalar) = node, scalar.style == .plain,
            ["", "~", "null", "Null", "NULL"].contains(scalar.string)
        {
            return true
        }
        return false
    }

    func mapping() throws(ConfigError) -> MappingReader {
        guard case .mapping(let mapping) = node else { throw error("expected a mapping (key: value)") }
        var entries: [(key: String, node: ConfigNode)] = []
        for (key, value) in mapping {
            guard case .scalar(let scalar) = key else {
                throw ConfigError(path: path, line: key.mark?.line, message: "keys must be plain strings")
            }
            let childPath = path.isEmpty ? scalar.string : "\(path).\(scalar.string)"
            entries.append((scalar.string, ConfigNode(node: value, path: childPath)))
        }
        return MappingReader(node: self, entries: entries)
    }

    func sequence() throws(ConfigError) -> [ConfigNode] {
        guard case .sequence(let sequence) = node else { throw error("expected a list") }
        return sequence.enumerated().map { index, child in
            ConfigNode(node: child, path: "\(path)[\(index)]")
        }
    }

    func string() throws(ConfigError) -> String {
        guard case .scalar(let scalar) = node else { throw error("expected a string") }
        return scalar.string
    }

    func int(in range: ClosedRange<Int>) throws(ConfigError) -> Int {
        guard case .scalar(let scalar) = node, let value = Int(scalar.string) else {
            throw error("expected a whole number")
        }
        guard range.contains(value) else {
            throw error("must be from \(range.lowerBound) to \(range.upperBound), got \(value)")
        }
        return value
    }

    func bool() throws(ConfigError) -> Bool {
        guard case .scalar(let scalar) = node else { throw error("expected true or false") }
        switch scalar.string {
        case "true", "True", "TRUE", "yes": return true
        case "false", "False", "FALSE", "no": return false
        default: throw error("expected true or false, got '\(scalar.string)'")
        }
    }

    /// A duration string; `off` (or `0s` where `allowOff`) means the feature is disabled.
    func duration() throws(ConfigError) -> Duration {
        let text = try string()
        guard let value = ValueParsing.duration(text) else {
            throw error("'\(text)' is not a duration; write it as 500ms, 30s, 2m or 1h")
        }
        return value
    }

    /// A duration, or `nil` for `off`.
    func optionalDuration() throws(ConfigError) -> Duration? {
        if try string() == "off" { return nil }
        let value = try duration()
        return value == .zero ? nil : value
    }

    func size() throws(ConfigError) -> Int {
        let text = try string()
        guard let value = ValueParsing.size(text) else {
            throw error("'\(text)' is not a size; write it as 512B, 64KiB, 16MiB or 1GiB")
        }
        return value
    }

    func stringList() throws(ConfigError) -> [String] {
        try sequence().map { (node) throws(ConfigError) in try node.string() }
    }
}

/// Reads keys from one mapping and remembers which were read.
struct MappingReader {
    let node: ConfigNode
    let entries: [(key: String, node: ConfigNode)]
    private var consumed: Set<String> = []

    init(node: ConfigNode, entries: [(key: String, node: ConfigNode)]) {
        self.node = node
        self.entries = entries
    }

    /// The child at `key`, or `nil` when absent or written as `null`.
    mutating func optional(_ key: String) -> ConfigNode? {
        consumed.insert(key)
        guard let child = entries.first(where: { $0.key == key })?.node, !child.isNull else { return nil }
        return child
    }

    mutating func required(_ key: String) throws(ConfigError) -> ConfigNode {
        guard let child = optional(key) else { throw node.error("missing required key '\(key)'") }
        return child
    }

    /// Fails on the first key that was never read: unknown keys are errors, not ignored.
    func finish() throws(ConfigError) {
        for entry in entries where !consumed.contains(entry.key) {
            let known = consumed.sorted().joined(separator: ", ")
            throw ConfigError(
                path: entry.node.path, line: entry.node.line,
                message: "unknown key '\(entry.key)' (known here: \(known))"
            )
        }
    }
}

extension ConfigNode {
    /// The line of every node below this one, by key path: for errors found after decoding
    /// (a file that does not exist, a duplicate name), which know the key path but not the line.
    func lines() -> [String: Int] {
        var index: [String: Int] = [:]
        func walk(_ node: ConfigNode) {
            if let line = node.line { index[node.path] = line }
            if let mapping = try? node.mapping() {
                for entry in mapping.entries { walk(entry.node) }
            } else if let items = try? node.sequence() {
                for item in items { walk(item) }
            }
        }
        walk(self)
        return index
    }
}
