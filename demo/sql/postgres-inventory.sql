-- The sample inventory database, PostgreSQL flavour (schema `inventory`). Used by the local
-- stack (scripts/demo), docker-compose.yml and the live tests. Run in the target database.
CREATE SCHEMA inventory;
SET search_path TO inventory;

CREATE TABLE customers (
  id SERIAL PRIMARY KEY,
  first_name VARCHAR(255) NOT NULL,
  last_name VARCHAR(255) NOT NULL,
  email VARCHAR(255) NOT NULL UNIQUE
);
ALTER SEQUENCE customers_id_seq RESTART WITH 1001;

CREATE TABLE products (
  id SERIAL PRIMARY KEY,
  name VARCHAR(255) NOT NULL,
  description VARCHAR(512),
  weight DOUBLE PRECISION,
  price NUMERIC(10, 2)
);
ALTER SEQUENCE products_id_seq RESTART WITH 101;

CREATE TABLE orders (
  order_number SERIAL PRIMARY KEY,
  order_date DATE NOT NULL,
  purchaser INTEGER NOT NULL REFERENCES customers(id),
  quantity INTEGER NOT NULL,
  product_id INTEGER NOT NULL REFERENCES products(id)
);
ALTER SEQUENCE orders_order_number_seq RESTART WITH 10001;

CREATE TYPE address_type AS ENUM ('SHIPPING', 'BILLING', 'LIVING');
CREATE TABLE addresses (
  id SERIAL PRIMARY KEY,
  customer_id INTEGER NOT NULL REFERENCES customers(id),
  street VARCHAR(255) NOT NULL,
  city VARCHAR(255) NOT NULL,
  state VARCHAR(255) NOT NULL,
  zip VARCHAR(255) NOT NULL,
  type address_type NOT NULL
);

-- One column of every common PostgreSQL type.
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE all_types (
  id INTEGER PRIMARY KEY,
  c_smallint SMALLINT,
  c_integer INTEGER,
  c_bigint BIGINT,
  c_numeric NUMERIC,
  c_numeric_scaled NUMERIC(12, 3),
  c_real REAL,
  c_double DOUBLE PRECISION,
  c_money MONEY,
  c_boolean BOOLEAN,
  c_char CHAR(3),
  c_varchar VARCHAR(20),
  c_text TEXT,
  c_date DATE,
  c_time TIME,
  c_timetz TIMETZ,
  c_timestamp TIMESTAMP,
  c_timestamptz TIMESTAMPTZ,
  c_interval INTERVAL,
  c_json JSON,
  c_jsonb JSONB,
  c_uuid UUID,
  c_bytea BYTEA,
  c_mood mood,
  c_int_array INTEGER[],
  c_text_array TEXT[],
  c_bit BIT(8),
  c_point POINT,
  c_xml XML
);
ALTER TABLE all_types REPLICA IDENTITY FULL;
ALTER TABLE customers REPLICA IDENTITY FULL;

INSERT INTO customers (first_name, last_name, email) VALUES
  ('Sally', 'Thomas', 'sally.thomas@acme.com'),
  ('George', 'Bailey', 'gbailey@foobar.com'),
  ('Edward', 'Walker', 'ed@walker.com'),
  ('Anne', 'Kretchmar', 'annek@noanswer.org');

INSERT INTO products (name, description, weight, price) VALUES
  ('scooter', 'Small 2-wheel scooter', 3.14, 79.90),
  ('car battery', '12V car battery', 8.1, 119.00),
  ('12-pack drill bits', '12-pack of drill bits with sizes ranging from #40 to #3', 0.8, 9.99),
  ('hammer', '12oz carpenter''s hammer', 0.75, 14.50),
  ('rocks', 'box of assorted rocks', 5.3, 2.25);

INSERT INTO orders (order_date, purchaser, quantity, product_id) VALUES
  ('2016-01-16', 1001, 1, 102),
  ('2016-01-17', 1002, 2, 105),
  ('2016-02-19', 1002, 2, 104),
  ('2016-02-21', 1003, 1, 103);

INSERT INTO addresses (customer_id, street, city, state, zip, type) VALUES
  (1001, '3183 Moore Avenue', 'Euless', 'Texas', '76036', 'SHIPPING'),
  (1002, '2389 Hidden Valley Road', 'Harrisburg', 'Pennsylvania', '17116', 'BILLING'),
  (1003, '281 Riverside Drive', 'Augusta', 'Georgia', '30901', 'LIVING');

INSERT INTO all_types VALUES
  (1, -32768, 2147483647, 9223372036854775807, 1234.5678, -98765.432, 1.5, 2.25, 12.34, true,
   'abc', 'varchar', 'text with "quotes" and \ backslash', '2024-03-01', '13:45:07.123456',
   '13:45:07+02', '2024-03-01 13:45:07.123456', '2024-03-01 13:45:07.123456+02',
   '1 day 02:03:04.5', '{"a": [1, 2]}', '{"b": {"c": true}}',
   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x0102ff', 'happy', '{1,2,3}', '{"x","y"}',
   B'10100101', '(1.5,2.5)', '<a>1</a>'),
  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
