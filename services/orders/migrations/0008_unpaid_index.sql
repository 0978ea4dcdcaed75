-- migrate: without a transaction
-- What a buyer holds unpaid of a ticket type (the purchase's limit, migration 0007), found in a
-- few index pages. Built without blocking the orders table's writes (purchases go on meanwhile),
-- which PostgreSQL does only outside a transaction: this file is one statement, run on its own.
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_unpaid_by_buyer
    ON orders (ticket_type_id, buyer_id) WHERE status = 'PENDING';
