import Logging
import Synchronization

/// The log level, changeable while running: a reload that changes `log_level` applies it (unless
/// `--log-level` was given). `ControlledLogHandler` reads it for every line.
public final class LogLevelControl: Sendable {
    private let value: Atomic<UInt8>
    /// `--log-level` was given: configurations do not change the level.
    public let isOverridden: Bool

    public init(_ level: Logger.Level, overridden: Bool = false) {
        value = Atomic(Self.code(level))
        isOverridden = overridden
    }

    public var level: Logger.Level {
        get { Logger.Level.allCases[Int(value.load(ordering: .relaxed))] }
        set { value.store(Self.code(newValue), ordering: .relaxed) }
    }

    private static func code(_ level: Logger.Level) -> UInt8 {
        UInt8(Logger.Level.allCases.firstIndex(of: level) ?? 2)
    }
}

/// A log handler whose level is a `LogLevelControl`'s.
public struct ControlledLogHandler: LogHandler {
    private var base: StreamLogHandler
    private let control: LogLevelControl

    public init(base: StreamLogHandler, control: LogLevelControl) {
        self.base = base
        self.control = control
    }

    public var logLevel: Logger.Level {
        get { control.level }
        set {}
    }

    public var metadata: Logger.Metadata {
        get { base.metadata }
        set { base.metadata = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { base[metadataKey: key] }
        set { base[metadataKey: key] = newValue }
    }

    public func log(event: LogEvent) {
        base.log(event: event)
    }
}
