/// A configuration problem, reported before anything binds.
///
/// Carries the key path (`routes[2].backends[0]`) and, when the YAML parser knows it, the line,
/// so an operator can go straight to the cause.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Where in the document the problem is, e.g. `routes[2].backends[0]`; empty for the whole file.
    public var path: String
    /// 1-based line in the config file, when known.
    public var line: Int?
    /// What is wrong, in words an operator can act on.
    public var message: String
    /// The file the problem is in, when known.
    public var file: String?

    public init(path: String, line: Int? = nil, message: String, file: String? = nil) {
        self.path = path
        self.line = line
        self.message = message
        self.file = file
    }

    public var description: String {
        var location = ""
        if let file { location += file }
        if let line { location += location.isEmpty ? "line \(line)" : ":\(line)" }
        let prefix = location.isEmpty ? "" : "\(location): "
        return path.isEmpty ? "\(prefix)\(message)" : "\(prefix)\(path): \(message)"
    }
}

/// Several configuration problems at once, so an operator fixes them in one pass.
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    public var errors: [ConfigError]
    public init(_ errors: [ConfigError]) { self.errors = errors }
    public var description: String { errors.map(\.description).joined(separator: "\n") }
}
