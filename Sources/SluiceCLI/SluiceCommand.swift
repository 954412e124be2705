import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Sluice
import SluiceConfig

/// The `sluice` command: run the gateway, check a configuration.
@main
struct SluiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "A reverse proxy and WebSocket gateway.",
        version: SluiceVersion.current,
        subcommands: [Run.self, Check.self],
        defaultSubcommand: Run.self
    )
}

enum SluiceVersion {
    static let current = "0.1.0"
}

/// Options shared by the subcommands.
struct ConfigOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "Path of the YAML configuration.")
    var config: String = "conf/sluice.yaml"

    @Option(name: .long, help: "Log level (trace, debug, info, notice, warning, error, critical); overrides the config.")
    var logLevel: String?

    func load() throws -> Configuration {
        do {
            return try ConfigurationLoader.load(file: config)
        } catch {
            printError("sluice: invalid configuration:\n\(error.description)")
            throw ExitCode(1)
        }
    }

    func level(_ configuration: Configuration) throws -> Logger.Level {
        let name = logLevel ?? configuration.logLevel.rawValue
        guard let level = Logger.Level(rawValue: name) else {
            printError("sluice: unknown log level '\(name)'")
            throw ExitCode(1)
        }
        return level
    }
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the gateway (the default).")

    @OptionGroup var options: ConfigOptions

    @Option(help: "Event loop threads (default: one per core).")
    var eventLoopThreads: Int?

    func validate() throws {
        if let threads = eventLoopThreads, !(1...256).contains(threads) {
            throw ValidationError("--event-loop-threads must be 1...256")
        }
    }

    func run() async throws {
        let configuration = try options.load()
        let level = try options.level(configuration)
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "sluice")
        let group: any EventLoopGroup = eventLoopThreads.map { MultiThreadedEventLoopGroup(numberOfThreads: $0) } ?? MultiThreadedEventLoopGroup.singleton
        let gateway = Gateway(configuration: configuration, group: group, logger: logger)
        let serviceGroup = ServiceGroup(
            configuration: .init(
                services: [.init(service: gateway)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        do {
            try await serviceGroup.run()
        } catch let error as ConfigError {
            printError("sluice: \(error.description)")
            throw ExitCode(1)
        } catch {
            printError("sluice: \(error)")
            throw ExitCode(1)
        }
    }
}

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Validate a configuration and print its listeners and routes.")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let configuration = try options.load()
        do {
            try Preflight.check(configuration)
        } catch {
            printError("sluice: invalid configuration:\n\(error.description)")
            throw ExitCode(1)
        }
        print(ConfigurationSummary.render(configuration))
    }
}
