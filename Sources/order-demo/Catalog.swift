import Foundation
import NIOCore
import RESP
import StrongboxClient
import Synchronization

/// Counters shared by every task of a run.
final class Tally: Sendable {
    private let state = Mutex([String: Int]())
    func add(_ name: String, _ n: Int = 1) { state.withLock { $0[name, default: 0] += n } }
    subscript(_ name: String) -> Int { state.withLock { $0[name] ?? 0 } }
    var all: [String: Int] { state.withLock { $0 } }
}

/// Product details and prices, cache-aside in Strongbox in front of the database.
///
/// - Read through: `GET {product:ID}`; on a miss one reader per key takes a short **lease**
///   (`SET {product:ID}:lease token NX PX 2000`), loads the row and fills the cache with a script
///   that writes only while its lease still stands. Other readers of that key wait for the fill
///   (a few milliseconds), then fall back to the database — nobody serves an old price.
/// - Invalidate on every write: the writer commits, then deletes the cached value *and* the
///   lease, so a loader that read the old row before the commit cannot put it back.
/// Keys share a hash tag, so value and lease live on one node of a sharded cache.
final class Catalog: Sendable {
    let cache: StrongboxClusterClient
    let store: Store
    let ttl: Duration
    let tally: Tally
    /// Product -> (version, when its invalidation finished): reads that start later must not see older versions.
    private let invalidated = Mutex([Int: (version: Int, at: ContinuousClock.Instant)]())

    static let fill = Script("""
        if redis.call('get', KEYS[2]) == ARGV[2] then
            redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[3])
            redis.call('del', KEYS[2])
            return 1
        end
        return 0
        """)

    init(cache: StrongboxClusterClient, store: Store, ttl: Duration, tally: Tally) {
        self.cache = cache
        self.store = store
        self.ttl = ttl
        self.tally = tally
    }

    static func key(_ id: Int) -> String { "{product:\(id)}" }
    static func lease(_ id: Int) -> String { "{product:\(id)}:lease" }

    func product(_ id: Int) async throws -> Store.ProductRow {
        let started = ContinuousClock.now
        let row = try await read(id)
        if let inv = invalidated.withLock({ $0[id] }), inv.at < started, row.version < inv.version {
            tally.add("stale_price_reads")
        }
        return row
    }

    private func decode(_ buffer: ByteBuffer) -> Store.ProductRow? {
        try? JSONDecoder().decode(Store.ProductRow.self, from: Data(buffer.readableBytesView))
    }

    private func read(_ id: Int) async throws -> Store.ProductRow {
        var lease: String?
        do throws(StrongboxError) {
            if let cached = try await cache.send(.get(Self.key(id))), let row = decode(cached) {
                tally.add("cache_hits")
                return row
            }
            tally.add("cache_misses")
            let token = UUID().uuidString
            if try await cache.send(.set(Self.lease(id), token, condition: .ifNotExists, expiration: .milliseconds(2000))) {
                lease = token
            } else {
                // Someone else is loading this key: wait for the fill, briefly.
                for _ in 0..<10 {
                    try? await Task.sleep(for: .milliseconds(2))
                    if let cached = try await cache.send(.get(Self.key(id))), let row = decode(cached) {
                        tally.add("cache_waits")
                        return row
                    }
                }
                tally.add("cache_wait_fallbacks")
            }
        } catch {
            tally.add("cache_errors")
        }
        guard let row = try await loadFromDatabase(id) else { throw DemoError("no product \(id)") }
        if let token = lease, let json = try? JSONEncoder().encode(row) {
            do throws(StrongboxError) {
                let filled = try await cache.send(.evalSHA(Self.fill, keys: [Self.key(id), Self.lease(id)],
                                                           arguments: [String(decoding: json, as: UTF8.self), token,
                                                                       Int(ttl.components.seconds * 1000)]))
                tally.add(filled == .integer(1) ? "cache_fills" : "cache_fills_refused")
            } catch {
                tally.add("cache_errors")
            }
        }
        return row
    }

    private func loadFromDatabase(_ id: Int) async throws -> Store.ProductRow? {
        tally.add("db_product_reads")
        return try await store.product(id)
    }

    /// After a committed write: drop the cached value and any loader's lease. While the cache
    /// node is unreachable this retries (the write is not finished until the old price is gone).
    func invalidate(_ id: Int, version: Int) async {
        while true {
            do throws(StrongboxError) {
                try await cache.send(.del([Self.key(id), Self.lease(id)]))
                break
            } catch {
                tally.add("invalidation_retries")
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
        invalidated.withLock { $0[id] = (version, .now) }
    }
}

struct DemoError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
