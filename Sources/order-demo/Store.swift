import Foundation
import GRDB

/// The system of record: SQLite through GRDB. Products, stock, orders, payments, and an
/// append-only log of order state changes (the outbox `recover` reads).
final class Store: Sendable {
    let pool: DatabasePool
    let path: String

    init(path: String) throws {
        self.path = path
        var config = Configuration()
        config.busyMode = .timeout(10)
        // WAL with synchronous=NORMAL: a commit does not wait for fsync (durable across process
        // crashes, which is what `recover` is about; a power cut may lose the last commits).
        config.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
        pool = try DatabasePool(path: path, configuration: config)
        try migrator.migrate(pool)
    }

    private var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE product (
                    id INTEGER PRIMARY KEY,
                    name TEXT NOT NULL,
                    price_cents INTEGER NOT NULL,
                    version INTEGER NOT NULL DEFAULT 1
                );
                -- No CHECK (available >= 0): "stock never negative" is an invariant the run checks, not one the database enforces.
                CREATE TABLE stock (
                    product_id INTEGER PRIMARY KEY REFERENCES product(id),
                    initial INTEGER NOT NULL,
                    available INTEGER NOT NULL,
                    reserved INTEGER NOT NULL DEFAULT 0,
                    sold INTEGER NOT NULL DEFAULT 0
                );
                CREATE TABLE purchase (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    idempotency_key TEXT NOT NULL UNIQUE,
                    product_id INTEGER NOT NULL REFERENCES product(id),
                    quantity INTEGER NOT NULL,
                    price_cents INTEGER NOT NULL,
                    status TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'cancelled')),
                    created_at REAL NOT NULL
                );
                CREATE TABLE payment (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    purchase_id INTEGER NOT NULL REFERENCES purchase(id),
                    amount_cents INTEGER NOT NULL,
                    at REAL NOT NULL
                );
                CREATE TABLE purchase_event (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    purchase_id INTEGER NOT NULL REFERENCES purchase(id),
                    event TEXT NOT NULL,
                    at REAL NOT NULL
                );
                CREATE INDEX purchase_status ON purchase(status);
                CREATE INDEX purchase_event_purchase ON purchase_event(purchase_id);
                """)
        }
        return m
    }

    /// `order-demo seed`: `products` products with `stock` units each (replacing what was there).
    func seed(products: Int, stock: Int) throws {
        try pool.write { db in
            try db.execute(sql: "DELETE FROM purchase_event; DELETE FROM payment; DELETE FROM purchase; DELETE FROM stock; DELETE FROM product;")
            for id in 1...products {
                try db.execute(sql: "INSERT INTO product (id, name, price_cents) VALUES (?, ?, ?)",
                               arguments: [id, "Product \(id)", 500 + (id * 37) % 9500])
                try db.execute(sql: "INSERT INTO stock (product_id, initial, available) VALUES (?, ?, ?)", arguments: [id, stock, stock])
            }
        }
    }

    var productCount: Int { (try? pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM product") ?? 0 }) ?? 0 }

    struct ProductRow: Codable, Sendable {
        var id: Int
        var name: String
        var priceCents: Int
        var version: Int
    }

    func product(_ id: Int) async throws -> ProductRow? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT id, name, price_cents, version FROM product WHERE id = ?", arguments: [id]).map {
                ProductRow(id: $0["id"], name: $0["name"], priceCents: $0["price_cents"], version: $0["version"])
            }
        }
    }

    /// A merchant's price change: the new price and a new version, in one transaction.
    func changePrice(_ id: Int, cents: Int) async throws -> Int {
        try await pool.write { db in
            try db.execute(sql: "UPDATE product SET price_cents = ?, version = version + 1 WHERE id = ?", arguments: [cents, id])
            return try Int.fetchOne(db, sql: "SELECT version FROM product WHERE id = ?", arguments: [id]) ?? 0
        }
    }

    /// A delivery: more units on sale (and in `initial`, so the books still balance).
    func restock(_ productID: Int, units: Int) async throws {
        try await pool.write { db in
            try db.execute(sql: "UPDATE stock SET initial = initial + ?, available = available + ? WHERE product_id = ?",
                           arguments: [units, units, productID])
        }
    }

    func available(_ productID: Int) async throws -> Int {
        try await pool.read { db in try Int.fetchOne(db, sql: "SELECT available FROM stock WHERE product_id = ?", arguments: [productID]) ?? 0 }
    }

    enum ReserveResult { case reserved(purchaseID: Int64), duplicate }

    /// Writes a reservation decided from an earlier read of `available` (a separate step, as when
    /// stock lives behind an inventory service or an ORM loads, modifies and saves it): the new
    /// stock level, the pending purchase and its first event, in one transaction. Only the lock
    /// around read-decide-write makes the earlier read still true here.
    func reserve(productID: Int, quantity: Int, availableBefore: Int, priceCents: Int, key: String) async throws -> ReserveResult {
        try await pool.write { db in
            do {
                try db.execute(sql: "INSERT INTO purchase (idempotency_key, product_id, quantity, price_cents, status, created_at) VALUES (?, ?, ?, ?, 'pending', ?)",
                               arguments: [key, productID, quantity, priceCents, Date().timeIntervalSince1970])
            } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE {
                return .duplicate
            }
            let id = db.lastInsertedRowID
            try db.execute(sql: "UPDATE stock SET available = ?, reserved = reserved + ? WHERE product_id = ?",
                           arguments: [availableBefore - quantity, quantity, productID])
            try Self.log(db, id, "reserved")
            return .reserved(purchaseID: id)
        }
    }

    /// The reservation as the database has it now (the "check" after writing it).
    func reservationHolds(_ purchaseID: Int64) async throws -> Bool {
        try await pool.read { db in
            try Bool.fetchOne(db, sql: "SELECT status = 'pending' FROM purchase WHERE id = ?", arguments: [purchaseID]) ?? false
        }
    }

    /// The payment service captured the money: recorded before the purchase is marked paid, so a
    /// crash in between leaves evidence `recover` completes from.
    func recordPayment(_ purchaseID: Int64, cents: Int) async throws {
        try await pool.write { db in
            try db.execute(sql: "INSERT INTO payment (purchase_id, amount_cents, at) VALUES (?, ?, ?)", arguments: [purchaseID, cents, Date().timeIntervalSince1970])
            try Self.log(db, purchaseID, "payment_captured")
        }
    }

    /// How a pending purchase ends: paid (the reserved units are sold for good) or cancelled
    /// (compensation: they go back to available stock).
    enum Settlement: String {
        case paid, cancelled
        var stockUpdate: String {
            switch self {
            case .paid: return "UPDATE stock SET reserved = reserved - ?, sold = sold + ? WHERE product_id = ?"
            case .cancelled: return "UPDATE stock SET reserved = reserved - ?, available = available + ? WHERE product_id = ?"
            }
        }
    }

    func confirm(_ purchaseID: Int64) async throws {
        try await pool.write { db in try Self.settle(db, purchaseID, .paid) }
    }

    func cancel(_ purchaseID: Int64) async throws {
        try await pool.write { db in try Self.settle(db, purchaseID, .cancelled) }
    }

    /// Ends a purchase that is still pending (one that is not is left as it is).
    static func settle(_ db: Database, _ purchaseID: Int64, _ outcome: Settlement) throws {
        guard let row = try Row.fetchOne(db, sql: "SELECT product_id, quantity FROM purchase WHERE id = ? AND status = 'pending'", arguments: [purchaseID]) else { return }
        let product: Int = row["product_id"], quantity: Int = row["quantity"]
        try db.execute(sql: "UPDATE purchase SET status = ? WHERE id = ?", arguments: [outcome.rawValue, purchaseID])
        try db.execute(sql: outcome.stockUpdate, arguments: [quantity, quantity, product])
        try log(db, purchaseID, outcome.rawValue)
    }

    /// Appends to the purchase's log (what `recover` reads).
    static func log(_ db: Database, _ purchaseID: Int64, _ event: String) throws {
        try db.execute(sql: "INSERT INTO purchase_event (purchase_id, event, at) VALUES (?, ?, ?)",
                       arguments: [purchaseID, event, Date().timeIntervalSince1970])
    }

    /// `order-demo recover`: every pending purchase is completed when its log shows the payment was
    /// captured, and cancelled (reservation released) otherwise. Returns (completed, cancelled).
    func recover() throws -> (completed: Int, cancelled: Int) {
        try pool.write { db in
            var completed = 0, cancelled = 0
            let pending = try Int64.fetchAll(db, sql: "SELECT id FROM purchase WHERE status = 'pending' ORDER BY id")
            for id in pending {
                let captured = try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM purchase_event WHERE purchase_id = ? AND event = 'payment_captured')", arguments: [id]) ?? false
                if captured {
                    try Self.settle(db, id, .paid)
                    try Self.log(db, id, "recovered_paid")
                    completed += 1
                } else {
                    try Self.settle(db, id, .cancelled)
                    try Self.log(db, id, "recovered_cancelled")
                    cancelled += 1
                }
            }
            return (completed, cancelled)
        }
    }

    struct Invariant: Codable, Sendable {
        var name: String
        var holds: Bool
        var detail: String
    }

    /// The invariants, each read from the database.
    func invariants() throws -> [Invariant] {
        try pool.read { db in
            var out: [Invariant] = []
            let negative = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM stock WHERE available < 0 OR reserved < 0") ?? 0
            out.append(Invariant(name: "stock never negative", holds: negative == 0, detail: "\(negative) products below zero"))

            let rows = try Row.fetchAll(db, sql: """
                SELECT s.product_id, s.initial, s.available, s.reserved, s.sold,
                       COALESCE((SELECT SUM(quantity) FROM purchase p WHERE p.product_id = s.product_id AND p.status = 'paid'), 0) AS paid_units,
                       COALESCE((SELECT SUM(quantity) FROM purchase p WHERE p.product_id = s.product_id AND p.status = 'pending'), 0) AS pending_units
                FROM stock s
                """)
            var oversold = 0, mismatched = 0, units = 0
            for r in rows {
                let initial: Int = r["initial"], available: Int = r["available"], reserved: Int = r["reserved"]
                let paid: Int = r["paid_units"], pending: Int = r["pending_units"], sold: Int = r["sold"]
                units += paid
                if paid > initial - available - reserved { oversold += paid - (initial - available - reserved) }
                if paid != initial - available - reserved || sold != paid || pending != reserved { mismatched += 1 }
            }
            out.append(Invariant(name: "units sold = initial − remaining", holds: mismatched == 0,
                                 detail: mismatched == 0 ? "\(units) units sold across \(rows.count) products"
                                     : "\(mismatched) products disagree; \(oversold) units sold beyond the stock (oversold)"))

            let keys = try Int.fetchOne(db, sql: "SELECT COUNT(*) - COUNT(DISTINCT idempotency_key) FROM purchase") ?? 0
            out.append(Invariant(name: "one order per idempotency key", holds: keys == 0, detail: "\(keys) duplicate orders"))

            let badPayments = try Int.fetchOne(db, sql: """
                SELECT COUNT(*) FROM (
                    SELECT p.id, p.status, (SELECT COUNT(*) FROM payment x WHERE x.purchase_id = p.id) AS n FROM purchase p
                ) WHERE (status = 'paid' AND n != 1) OR (status != 'paid' AND n != 0 AND status != 'pending')
                """) ?? 0
            out.append(Invariant(name: "every paid order has exactly one payment", holds: badPayments == 0,
                                 detail: "\(badPayments) orders with a wrong number of payments"))

            let pending = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM purchase WHERE status = 'pending'") ?? 0
            out.append(Invariant(name: "no pending orders left after recover", holds: pending == 0, detail: "\(pending) pending"))
            return out
        }
    }

    struct Counts: Codable, Sendable { var paid: Int; var cancelled: Int; var pending: Int; var payments: Int }

    func counts() throws -> Counts {
        try pool.read { db in
            Counts(paid: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM purchase WHERE status = 'paid'") ?? 0,
                   cancelled: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM purchase WHERE status = 'cancelled'") ?? 0,
                   pending: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM purchase WHERE status = 'pending'") ?? 0,
                   payments: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM payment") ?? 0)
        }
    }
}
