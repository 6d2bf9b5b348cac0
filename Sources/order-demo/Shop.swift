import Foundation
import Redlock
import StrongboxClient

/// One purchase intent: the buyer's idempotency key travels with every retry of it.
struct OrderRequest: Sendable {
    let idempotencyKey: String
    let productID: Int
    let quantity: Int
}

enum OrderOutcome: String, Sendable {
    case paid, cancelled, rejectedNoStock, duplicate, crashed, lockUnavailable, failed
}

/// Settings of the order flow.
struct ShopSettings: Sendable {
    var useLocks = true
    var lockTTL: Duration = .seconds(2)
    var paymentFailureRate = 0.05
    var paymentLatency: Duration = .milliseconds(2)
    /// Probability that the process "crashes" between phases (leaving the order pending for `recover`).
    var crashRate = 0.0
    /// Inventory lookup latency between reading the stock and writing the reservation.
    var inventoryLatency: Duration = .milliseconds(1)
}

/// The order flow: try (reserve under a Redlock on the product), confirm (pay) or cancel (compensate).
final class Shop: Sendable {
    let store: Store
    let catalog: Catalog
    let redlock: Redlock?
    let idempotency: StrongboxClusterClient
    let settings: ShopSettings
    let tally: Tally
    /// One task per product in this process contends for the product's Redlock at a time.
    /// One turn per product per process in front of its Redlock (the Redlock library's `LocalTurns`).
    let gate = LocalTurns()

    init(store: Store, catalog: Catalog, redlock: Redlock?, idempotency: StrongboxClusterClient, settings: ShopSettings, tally: Tally) {
        self.store = store
        self.catalog = catalog
        self.redlock = redlock
        self.idempotency = idempotency
        self.settings = settings
        self.tally = tally
    }

    func place(_ request: OrderRequest) async -> OrderOutcome {
        do {
            return try await placeOrThrow(request)
        } catch {
            tally.add("order_errors")
            return .failed
        }
    }

    /// Runs `body` in the product's local turn holding its Redlock (both skipped with `--no-locks`);
    /// the lock is released however `body` ends. nil: the lock could not be had.
    private func withProductLock<T>(_ productID: Int, _ body: (LockLease?) async throws -> T) async throws -> T? {
        func locked() async throws -> T? {
            var lease: LockLease?
            if let redlock {
                do throws(RedlockError) {
                    lease = try await redlock.acquire("lock:product:\(productID)", ttl: settings.lockTTL)
                } catch {
                    return nil
                }
            }
            let result: Result<T, any Error>
            do { result = .success(try await body(lease)) } catch { result = .failure(error) }
            if let lease, let redlock { await redlock.release(lease) }
            return try result.get()
        }
        guard redlock != nil else { return try await locked() }
        return try await gate.withTurn("product:\(productID)") { try await locked() }
    }

    /// Cancel: the reservation goes back to available stock. That writes `available`, so it takes
    /// the product lock like the try phase does — a cancel landing between another order's read
    /// and write of the stock would otherwise be overwritten (a lost update).
    private func compensate(_ purchaseID: Int64, productID: Int) async throws {
        let done: Void? = try await withProductLock(productID) { _ in try await store.cancel(purchaseID) }
        // Without the lock the order stays pending: `recover` cancels it later, when no order runs.
        if done == nil { tally.add("cancel_deferred_to_recovery") }
    }

    /// The merchant's delivery of `units` more: it writes `available`, so it takes the product lock too.
    func restock(_ productID: Int, units: Int) async throws -> Bool {
        try await withProductLock(productID) { _ in try await store.restock(productID, units: units) } != nil
    }

    private func lockStillValid(_ lease: LockLease?) -> Bool {
        guard let lease else { return true }
        return ContinuousClock.now + .milliseconds(200) <= lease.validUntil
    }

    /// Read the stock, decide, write the reservation: the steps the product lock makes atomic.
    private enum TryResult { case written(Store.ReserveResult), noStock, lockExpired }

    private func reserveStock(_ r: OrderRequest, priceCents: Int, lease: LockLease?) async throws -> TryResult {
        let available = try await store.available(r.productID)
        if available < r.quantity { return .noStock }
        try await Task.sleep(for: settings.inventoryLatency)
        // Act on the lock only while it is valid (with room for the write itself).
        if !lockStillValid(lease) {
            tally.add("lock_expired_before_write")
            return .lockExpired
        }
        return .written(try await store.reserve(productID: r.productID, quantity: r.quantity, availableBefore: available,
                                       priceCents: priceCents, key: r.idempotencyKey))
    }

    private func placeOrThrow(_ r: OrderRequest) async throws -> OrderOutcome {
        // 1. Idempotency, first line: the key is claimed in Strongbox; a retry of the same request stops here.
        if settings.useLocks {
            do throws(StrongboxError) {
                let first = try await idempotency.send(.set("idem:\(r.idempotencyKey)", "1", condition: .ifNotExists,
                                                            expiration: .seconds(3600)))
                if !first {
                    tally.add("duplicates_prevented_by_strongbox")
                    return .duplicate
                }
            } catch {
                // The cache node is unreachable: the database's unique constraint still stops duplicates.
                tally.add("idempotency_unavailable")
            }
        }
        let product = try await catalog.product(r.productID)

        // 2. Try: reserve stock under a lock on the product. A sold-out product is refused without
        // taking the lock (a read that can only say "no"; the decision to sell is made under the lock).
        if try await store.available(r.productID) < r.quantity { return .rejectedNoStock }
        let tried = try await withProductLock(r.productID) { lease in
            try await reserveStock(r, priceCents: product.priceCents, lease: lease)
        }
        guard let tried else {
            tally.add("lock_unavailable")
            return .lockUnavailable
        }
        let reservation: Store.ReserveResult
        switch tried {
        case .noStock: return .rejectedNoStock
        case .lockExpired: return .lockUnavailable
        case .written(let r): reservation = r
        }
        guard case .reserved(let purchaseID) = reservation else {
            tally.add("duplicates_prevented_by_database")
            return .duplicate
        }
        guard try await store.reservationHolds(purchaseID) else { return .failed }
        if Double.random(in: 0..<1) < settings.crashRate {
            tally.add("crashed_after_try")
            return .crashed
        }

        // 3. Confirm or cancel.
        try await Task.sleep(for: settings.paymentLatency)
        if Double.random(in: 0..<1) < settings.paymentFailureRate {
            try await compensate(purchaseID, productID: r.productID)
            return .cancelled
        }
        try await store.recordPayment(purchaseID, cents: product.priceCents * r.quantity)
        if Double.random(in: 0..<1) < settings.crashRate / 2 {
            tally.add("crashed_after_payment")
            return .crashed
        }
        try await store.confirm(purchaseID)
        return .paid
    }
}
