import ArbiterStore
import Foundation
import Testing

/// Splits, promotion, shadows and what `gc` must keep: the store's side of a deployment.
@Suite struct DeploymentTests {
    static let small = StoreConfiguration(mapSize: 1 << 30, create: true)

    static func publish(_ catalog: Catalog, _ model: String = "m", seed: Float = 0, activate: Bool = true) throws -> UInt64 {
        try LifecycleTests.publish(catalog, model, values: 100, seed: seed, activate: activate)
    }

    @Test func splitsAreCheckedAsGiven() throws {
        #expect(try TrafficSplit(parsing: "7=0.9,8=0.1").shares == [.init(version: 7, weight: 0.9), .init(version: 8, weight: 0.1)])
        #expect(try TrafficSplit(parsing: " 8 = 0.25 , 7=0.75").versions == [7, 8], "kept oldest first")
        let refusals: [(String, String)] = [
            ("7=1", "at least two versions"), ("7=0.9,8=0.2", "sum to 1.1"), ("7=0.5,7=0.5", "version 7 twice"),
            ("7=1.5,8=-0.5", "not a positive number"), ("7:0.9,8=0.1", "is not VERSION=WEIGHT"), ("0=0.5,8=0.5", "is not VERSION=WEIGHT"),
            ("7=nan,8=0.1", "not a positive number"), ("", "is not VERSION=WEIGHT"),
        ]
        for (text, why) in refusals {
            do {
                _ = try TrafficSplit(parsing: text)
                Issue.record("'\(text)' was accepted")
            } catch {
                #expect("\(error)".contains(why), "'\(text)': \(error)")
            }
        }
        // A stored split is checked on the way in, too.
        #expect(throws: (any Error).self) { try JSONDecoder().decode(TrafficSplit.self, from: Data(#"{"shares":[{"version":7,"weight":1}]}"#.utf8)) }
        #expect(throws: (any Error).self) { try ShadowConfig(version: 3, sample: 0) }
        #expect(throws: (any Error).self) { try ShadowConfig(version: 3, sample: 1.5) }
    }

    /// 90/10 over 100k routing keys sends 10% ± 1% to the smaller side, always the same side per key; 80/20
    /// moves only keys from the larger side to the smaller, about 10% of them.
    @Test func splitsAreStickyAndMoveOnlyTheKeysThatMust() throws {
        let a = try TrafficSplit(parsing: "7=0.9,8=0.1"), b = try TrafficSplit(parsing: "7=0.8,8=0.2")
        let keys = (0..<100_000).map { UInt64($0) &* 0x2545_F491_4F6C_DD1D &+ 12345 }
        var small = 0, moved = 0
        for k in keys {
            let before = a.index(forKey: k, model: "leads")
            #expect(before == a.index(forKey: k, model: "leads"))
            if before == 1 { small += 1 }
            let after = b.index(forKey: k, model: "leads")
            if after != before {
                moved += 1
                #expect(before == 0 && after == 1, "key \(k) moved from v8 to v7")
            }
        }
        #expect(abs(Double(small) / 100_000 - 0.1) <= 0.01, "\(small) of 100k keys on the 10% side")
        #expect(abs(Double(moved) / 100_000 - 0.1) <= 0.01, "\(moved) keys moved")
        // Sequential keys (user ids) spread as well as random ones.
        let sequential = (0..<100_000).filter { a.index(forKey: UInt64($0), model: "leads") == 1 }.count
        #expect(abs(Double(sequential) / 100_000 - 0.1) <= 0.01, "\(sequential)")
        // Another model splits the same keys independently.
        let other = keys.prefix(10_000).filter { a.index(forKey: $0, model: "leads") != a.index(forKey: $0, model: "feed") }.count
        #expect(other > 1000, "\(other)")
    }

    @Test func splitPromoteAndShadowAreOneTransactionEach() throws {
        let path = temporaryStorePath("split")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let catalog = Catalog(environment: try StoreEnvironment.open(path: path, configuration: Self.small))
        for i in 1...4 { _ = try Self.publish(catalog, seed: Float(i), activate: i <= 3) }
        try catalog.recordValidation(model: "m", version: 2, ValidationRecord(outcome: .rejected, reason: "golden case 0", by: "test"))
        var g = try catalog.generation()

        try catalog.split(model: "m", try TrafficSplit(parsing: "3=0.9,4=0.1"))
        #expect(try catalog.generation() == g + 1)
        g += 1
        var d = try catalog.deployment(model: "m")
        #expect(d.active == 3 && d.split?.versions == [3, 4] && d.required == [3, 4])
        #expect(try catalog.versions(model: "m").map(\.splitWeight) == [nil, nil, 0.9, 0.1])
        // Unknown and rejected versions are refused, and nothing changes.
        #expect(throws: StoreError.unknownVersion(model: "m", version: 9)) { try catalog.split(model: "m", try TrafficSplit(parsing: "3=0.5,9=0.5")) }
        do {
            try catalog.split(model: "m", try TrafficSplit(parsing: "2=0.5,3=0.5"))
            Issue.record("a rejected version was split in")
        } catch {
            #expect("\(error)".contains("v2 was rejected by test: golden case 0"), "\(error)")
        }
        #expect(throws: StoreError.unknownModel("nope")) { try catalog.split(model: "nope", try TrafficSplit(parsing: "3=0.5,4=0.5")) }
        #expect(try catalog.generation() == g)

        try catalog.setShadow(model: "m", try ShadowConfig(version: 4, sample: 0.05))
        #expect(try catalog.deployment(model: "m").shadow == (try ShadowConfig(version: 4, sample: 0.05)))
        #expect(try catalog.versions(model: "m").map(\.isShadow) == [false, false, false, true])
        #expect(throws: (any Error).self) { try catalog.setShadow(model: "m", try ShadowConfig(version: 2, sample: 0.05)) }

        // Promote: active, the split over, the shadow of that version over.
        g = try catalog.generation()
        #expect(throws: (any Error).self) { try catalog.promote(model: "m", version: 2) }
        try catalog.promote(model: "m", version: 4)
        d = try catalog.deployment(model: "m")
        #expect(d.active == 4 && d.split == nil && d.shadow == nil)
        #expect(try catalog.generation() == g + 1)

        // A publish that activates ends a split; one that does not leaves it.
        try catalog.split(model: "m", try TrafficSplit(parsing: "3=0.5,4=0.5"))
        _ = try Self.publish(catalog, seed: 5, activate: false)
        #expect(try catalog.deployment(model: "m").split != nil)
        _ = try Self.publish(catalog, seed: 6)
        #expect(try catalog.deployment(model: "m").split == nil)
        #expect(try catalog.clearShadow(model: "m") == false)
    }

    /// `gc` on a store with 50 versions keeps the active one, a split's, the shadow, what a server retains and
    /// the newest K; deletes the rest with their records.
    @Test func gcKeepsWhatServesAndWhatServersRetain() throws {
        let path = temporaryStorePath("gc-keep")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let catalog = Catalog(environment: try StoreEnvironment.open(path: path, configuration: Self.small))
        for i in 1...50 { _ = try Self.publish(catalog, seed: Float(i), activate: i == 30) }
        try catalog.split(model: "m", try TrafficSplit(parsing: "30=0.8,12=0.2"))
        try catalog.setShadow(model: "m", try ShadowConfig(version: 5, sample: 0.1))
        try catalog.recordShadow(model: "m", version: 7, ShadowRecord(comparisons: [], by: "test"))
        try catalog.recordRetained(model: "m", RetainedRecord(versions: [20, 21], by: "test"))
        let collected = try catalog.gc(model: "m", keep: 2)
        #expect(collected.kept == [5, 12, 20, 21, 30, 49, 50])
        #expect(collected.versions.count == 43)
        #expect(try catalog.versions(model: "m").map(\.meta.version) == [5, 12, 20, 21, 30, 49, 50])
        #expect(try catalog.shadowRecord(model: "m", version: 7) == nil, "a deleted version's records go with it")
        #expect(try catalog.versions(model: "m").filter(\.isRetained).map(\.meta.version) == [20, 21])
    }
}
