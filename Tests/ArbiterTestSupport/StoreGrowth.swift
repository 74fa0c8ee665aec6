import Foundation

/// Helpers that act on a store from another process, as a second trainer would.
public enum OtherProcess {
    /// Grows the store at `path` from another process: Debian's `mdb_load` opens it with a map of
    /// `mapSize` bytes (raising the size the store records, as `arbiter-train --map-size-gib` does) and
    /// commits `mebibytes` MiB of ballast under `x/ballast/…`, keys no model reads.
    public static func grow(store path: String, mapSize: Int, mebibytes: Int) throws {
        let dump = FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-ballast-\(UUID().uuidString).txt")
        defer { try? FileManager.default.removeItem(at: dump) }
        var text = "VERSION=3\nformat=print\ntype=btree\nmapsize=\(mapSize)\nHEADER=END\n"
        let mib = " " + String(repeating: "x", count: 1 << 20) + "\n"
        FileManager.default.createFile(atPath: dump.path, contents: nil)
        let h = try FileHandle(forWritingTo: dump)
        defer { try? h.close() }
        h.write(Data(text.utf8))
        for i in 0..<mebibytes {
            h.write(Data(" x/ballast/\(String(format: "%05d", i))\n".utf8))
            h.write(Data(mib.utf8))
        }
        text = "DATA=END\n"
        h.write(Data(text.utf8))
        try run("/usr/bin/mdb_load", ["-f", dump.path, path])
    }

    /// Runs `executable` with `arguments`; throws with its output unless it exits 0.
    @discardableResult
    public static func run(_ executable: String, _ arguments: [String]) throws -> String {
        let (status, text) = try capture(executable, arguments)
        guard status == 0 else {
            throw ReferenceError("\(executable) \(arguments.joined(separator: " ")) exited \(status): \(text)")
        }
        return text
    }

    /// Runs `executable` with `arguments`; returns its exit status and its output (stdout and stderr).
    public static func capture(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, text)
    }

    /// The folder of this test binary, where SwiftPM also puts `arbiter-train` and `arbiterd`.
    public static var binDir: URL {
        URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
            .deletingLastPathComponent()
    }

    /// The path of the built `arbiter-train`.
    public static var trainer: String { binDir.appendingPathComponent("arbiter-train").path }
}

/// A fresh path under the temporary directory (not created).
public func temporaryPath(_ tag: String) -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-\(tag)-\(UUID().uuidString)").path
}
