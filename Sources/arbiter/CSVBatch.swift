import ArbiterClient
import ArbiterWire
import Foundation

/// Reads a CSV file a chunk at a time: memory holds one chunk and the line being cut, whatever the file's
/// size. Fields follow RFC 4180 quoting ("a, b" and "say ""hi""") within a line; a quoted field may not
/// span lines. A UTF-8 byte order mark and CR before LF are dropped.
final class CSVReader {
    private let handle: FileHandle
    private var buffer: [UInt8] = []
    private var start = 0
    private var eof = false
    private(set) var lineNumber = 0
    let source: String
    static let chunkBytes = 1 << 20

    init(handle: FileHandle, source: String) {
        self.handle = handle
        self.source = source
    }

    /// The next non-blank line's fields, or nil at the end of the file.
    func next() throws -> [String]? {
        while true {
            guard let line = try nextLine() else { return nil }
            lineNumber += 1
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
            return try Self.fields(line, lineNumber: lineNumber)
        }
    }

    private func nextLine() throws -> ArraySlice<UInt8>? {
        while true {
            if let nl = buffer[start...].firstIndex(of: 0x0A) {
                var end = nl
                if end > start && buffer[end - 1] == 0x0D { end -= 1 }
                var line = buffer[start..<end]
                start = nl + 1
                if lineNumber == 0 && line.starts(with: [0xEF, 0xBB, 0xBF]) { line = line.dropFirst(3) }
                return line
            }
            if eof {
                guard start < buffer.count else { return nil }
                var line = buffer[start...]
                start = buffer.count
                if line.last == 0x0D { line = line.dropLast() }
                return line
            }
            // Keep the unfinished line, read on.
            buffer.removeSubrange(..<start)
            start = 0
            let chunk: Data?
            do { chunk = try handle.read(upToCount: Self.chunkBytes) } catch {
                throw CLIError("cannot read \(source): \(error.localizedDescription)")
            }
            if let chunk, !chunk.isEmpty { buffer.append(contentsOf: chunk) } else { eof = true }
            if buffer.count > 64 << 20 { throw CLIError("\(source): line \(lineNumber + 1) is longer than 64 MiB") }
        }
    }

    static func fields(_ line: ArraySlice<UInt8>, lineNumber: Int) throws -> [String] {
        try line.withUnsafeBufferPointer { try fields($0, lineNumber: lineNumber) }
    }

    static func fields(_ line: UnsafeBufferPointer<UInt8>, lineNumber: Int) throws -> [String] {
        var out: [String] = []
        var i = line.startIndex
        while true {
            if i < line.endIndex && line[i] == 0x22 {
                var field: [UInt8] = []
                i += 1
                while true {
                    guard i < line.endIndex else {
                        throw CLIError("line \(lineNumber): a quoted field is not closed on its line (fields may not span lines)")
                    }
                    if line[i] == 0x22 {
                        if i + 1 < line.endIndex && line[i + 1] == 0x22 {
                            field.append(0x22)
                            i += 2
                            continue
                        }
                        i += 1
                        break
                    }
                    field.append(line[i])
                    i += 1
                }
                out.append(String(decoding: field, as: UTF8.self))
                guard i == line.endIndex || line[i] == 0x2C else {
                    throw CLIError("line \(lineNumber): text after the closing quote of field \(out.count)")
                }
            } else {
                let end = line[i...].firstIndex(of: 0x2C) ?? line.endIndex
                out.append(String(decoding: UnsafeBufferPointer(rebasing: line[i..<end]), as: UTF8.self))
                i = end
            }
            if i == line.endIndex { return out }
            i += 1  // the comma
        }
    }

    /// A field as CSV writes it: quoted when it holds a comma, a quote or a line break.
    static func quoted(_ s: String) -> String {
        guard s.utf8.contains(where: { $0 == 0x2C || $0 == 0x22 || $0 == 0x0A || $0 == 0x0D }) else { return s }
        return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

/// Turns CSV rows into SCORE requests: consecutive rows with the same `--group-by` value are one request
/// (their shared context from the first of them, one candidate per row); without `--group-by`, every row is
/// a request of one candidate. Columns are matched to the schema's features by name; other columns are
/// ignored (named once on standard error).
final class CSVRequests {
    struct Group {
        let request: ScoreRequest
        /// The group's `--group-by` value (empty without one), and its first and last line.
        let key: String
        let firstLine: Int
        let lastLine: Int
    }

    private let reader: CSVReader
    private let model: String
    private let schema: ModelSchema
    private let groupColumn: Int?
    private let idColumn: Int
    private let contextColumns: [Int]
    private let candidateColumns: [Int]
    private let maxCandidates: Int
    private let topK: UInt32
    private let version: UInt64
    private let headerCount: Int
    let groupName: String?
    let ignored: [String]
    /// Rows read ahead: the first row of the next group.
    private var lookahead: (line: Int, fields: [String])?
    /// Hashes of the keys of groups already sent, to refuse a key that comes back after other rows.
    private var finished = Set<Int>()

    init(reader: CSVReader, model: String, schema: ModelSchema, groupBy: String?, idColumn: String, topK: UInt32, version: UInt64,
         maxCandidates: Int) throws {
        self.reader = reader
        self.model = model
        self.schema = schema
        self.topK = topK
        self.version = version
        self.maxCandidates = maxCandidates
        guard let header = try reader.next() else { throw CLIError("\(reader.source) is empty: a CSV needs a header line naming its columns") }
        headerCount = header.count
        var index: [String: Int] = [:]
        for (i, name) in header.enumerated() {
            let name = name.trimmingCharacters(in: .whitespaces)
            if index[name] != nil { throw CLIError("\(reader.source): column '\(name)' appears twice in the header") }
            index[name] = i
        }
        func column(_ name: String, _ what: String) throws -> Int {
            guard let i = index[name] else {
                throw CLIError("\(reader.source) has no column '\(name)' (\(what)); its columns: \(header.joined(separator: ", "))")
            }
            return i
        }
        groupName = groupBy
        groupColumn = try groupBy.map { try column($0, "--group-by") }
        self.idColumn = try column(idColumn, "each candidate's id; --id-column names another")
        let missing = (schema.contextFeatures + schema.candidateFeatures).map(\.name).filter { index[$0] == nil }
        guard missing.isEmpty else {
            throw CLIError("\(reader.source) lacks the feature column\(missing.count == 1 ? "" : "s") \(missing.joined(separator: ", ")) that \(model) takes (see `arbiter info --model \(model)`)")
        }
        contextColumns = schema.contextFeatures.map { index[$0.name]! }
        candidateColumns = schema.candidateFeatures.map { index[$0.name]! }
        let used = Set(contextColumns + candidateColumns + [self.idColumn] + (groupColumn.map { [$0] } ?? []))
        ignored = header.indices.filter { !used.contains($0) }.map { header[$0] }
    }

    /// The next request, or nil at the end of the file.
    func next() throws -> Group? {
        guard let (firstLine, first) = try lookahead ?? readRow() else { return nil }
        lookahead = nil
        let key = groupColumn.map { first[$0] } ?? ""
        if groupColumn != nil {
            guard finished.insert(key.hashValue).inserted else {
                throw CLIError("line \(firstLine): \(groupName!) '\(key)' comes back after other rows; rows of one request must be consecutive (sort the file by \(groupName!))")
            }
        }
        let context = try schema.contextFeatures.indices.map { try value(first, contextColumns[$0], schema.contextFeatures[$0], line: firstLine) }
        var ids: [UInt64] = []
        var matrix: [Float] = []
        matrix.reserveCapacity(schema.candidateFeatures.count * 8)
        var line = firstLine, fields = first
        var lastLine = firstLine
        while true {
            guard ids.count < maxCandidates else {
                throw CLIError("line \(line): \(groupName.map { "\($0) '\(key)'" } ?? "the request") has more than \(maxCandidates) rows, the server's limit of candidates per request")
            }
            let idText = Self.trimmed(fields[idColumn])
            guard let id = UInt64(idText) else {
                throw CLIError("line \(line): the id '\(idText)' is not a non-negative integer")
            }
            ids.append(id)
            for (j, f) in schema.candidateFeatures.enumerated() { matrix.append(try value(fields, candidateColumns[j], f, line: line)) }
            if line != firstLine {
                for (j, f) in schema.contextFeatures.enumerated() {
                    let v = try value(fields, contextColumns[j], f, line: line)
                    guard v == context[j] || (v.isNaN && context[j].isNaN) else {
                        throw CLIError("line \(line): \(f.name) is \(fields[contextColumns[j]]) here but \(context[j]) in line \(firstLine), the first of \(groupName!) '\(key)': rows of one request share its context")
                    }
                }
            }
            lastLine = line
            guard let groupColumn, let (nextLine, nextFields) = try readRow() else { break }
            if nextFields[groupColumn] != key {
                lookahead = (nextLine, nextFields)
                break
            }
            line = nextLine
            fields = nextFields
        }
        let request = ScoreRequest(model: model, version: version, topK: topK, context: context, candidateIDs: ids,
                                   candidateFeatureCount: schema.candidateFeatures.count, candidateFeatures: matrix)
        return Group(request: request, key: key, firstLine: firstLine, lastLine: lastLine)
    }

    private func readRow() throws -> (Int, [String])? {
        guard let fields = try reader.next() else { return nil }
        let line = reader.lineNumber
        guard fields.count == headerCount else {
            throw CLIError("line \(line): \(fields.count) fields, the header has \(headerCount)")
        }
        return (line, fields)
    }

    /// A feature's value: a number, or empty / NA / NaN / null for a missing value where the feature takes one.
    private func value(_ fields: [String], _ column: Int, _ f: FeatureSpec, line: Int) throws -> Float {
        let text = Self.trimmed(fields[column])
        if let v = Float(text), v.isFinite { return v }
        if text.isEmpty || ["na", "nan", "null"].contains(text.lowercased()) {
            guard f.allowsMissing else {
                throw CLIError("line \(line): '\(f.name)' is missing (\(text.isEmpty ? "empty" : text)), and the model does not accept a missing \(f.name)")
            }
            return .nan
        }
        throw CLIError("line \(line): '\(f.name)' is '\(text)', not a number")
    }

    /// Without leading and trailing spaces and tabs (no Foundation: this runs for every cell).
    static func trimmed(_ s: String) -> Substring {
        var t = Substring(s)
        while let c = t.utf8.first, c == 0x20 || c == 0x09 { t = t.dropFirst() }
        while let c = t.utf8.last, c == 0x20 || c == 0x09 { t = t.dropLast() }
        return t
    }

    /// The header of the CSV answer: the group column, id, score, the model's columns, version.
    func answerHeader() -> String {
        ((groupName.map { [$0] } ?? []) + ["id", "score"] + schema.outputs.map(\.name) + ["version"]).map(CSVReader.quoted).joined(separator: ",") + "\n"
    }

    /// One CSV line per row of the answer.
    static func answerRows(_ r: ScoreResult, key: String?) -> String {
        var out = ""
        let prefix = key.map { CSVReader.quoted($0) + "," } ?? ""
        for i in r.ids.indices {
            out += prefix
            out += String(r.ids[i])
            out += ","
            out += r.scores[i].description
            for c in r.columns {
                out += ","
                switch c.values {
                case .float32(let v): out += v[i].isNaN ? "" : v[i].description
                case .code: out += CSVReader.quoted(c.label(at: i) ?? "")
                }
            }
            out += ",\(r.version)\n"
        }
        return out
    }
}
