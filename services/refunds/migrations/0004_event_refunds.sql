-- An event's refunds, for its organizer: its orders by event.
CREATE INDEX orders_view_event ON orders_view (event_id);
