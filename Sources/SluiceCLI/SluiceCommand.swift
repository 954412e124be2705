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
        subcommands: [Run.self, Check.self, Passwd.self],
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
            try await Preflight.check(configuration)
        } catch {
            printError("sluice: invalid configuration:\n\(error.description)")
            throw ExitCode(1)
        }
        print(ConfigurationSummary.render(configuration))
        for warning in ConfigurationWarnings.compute(configuration) {
            print("warning: \(warning)")
        }
    }
}

struct Passwd: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print an htpasswd line (bcrypt) for USER; the password is read from the terminal, or from stdin when piped."
    )

    @Argument(help: "The user name.")
    var user: String

    @Option(help: "bcrypt cost (2^cost rounds), 10...15.")
    var cost: Int = 12

    func validate() throws {
        guard !user.isEmpty, !user.contains(":"), !user.contains(where: \.isNewline) else {
            throw ValidationError("a user name cannot be empty or contain ':' or a newline")
        }
        guard (10...15).contains(cost) else { throw ValidationError("--cost must be 10...15") }
    }

    func run() throws {
        let password: String
        if isatty(STDIN_FILENO) != 0 {
            guard let first = PasswordPrompt.read("Password: "), let second = PasswordPrompt.read("Again: ") else { throw ExitCode(1) }
            guard first == second else {
                printError("sluice: the passwords differ")
                throw ExitCode(1)
            }
            password = first
        } else {
            guard let line = readLine(strippingNewline: true) else {
                printError("sluice: no password on stdin")
                throw ExitCode(1)
            }
            password = line
        }
        guard !password.isEmpty else {
            printError("sluice: empty password")
            throw ExitCode(1)
        }
        guard let hash = PasswordHasher.bcrypt(password: password, cost: cost) else {
            printError("sluice: libcrypt could not make a bcrypt hash")
            throw ExitCode(1)
        }
        print("\(user):\(hash)")
    }
}

/// Reads a line from the terminal with echo off.
enum PasswordPrompt {
    static func read(_ prompt: String) -> String? {
        FileHandle.standardError.write(Data(prompt.utf8))
        var saved = termios()
        tcgetattr(STDIN_FILENO, &saved)
        var silent = saved
        silent.c_lflag &= ~tcflag_t(ECHO)
        tcsetattr(STDIN_FILENO, TCSANOW, &silent)
        defer {
            tcsetattr(STDIN_FILENO, TCSANOW, &saved)
            FileHandle.standardError.write(Data("\n".utf8))
        }
        return readLine(strippingNewline: true)
    }
}
