-- The sample inventory database, MariaDB flavour. Used by the local stack (scripts/demo),
-- docker-compose.yml and the live tests. Run in the target database.
CREATE TABLE customers (
  id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY,
  first_name VARCHAR(255) NOT NULL,
  last_name VARCHAR(255) NOT NULL,
  email VARCHAR(255) NOT NULL UNIQUE KEY
) AUTO_INCREMENT = 1001;

CREATE TABLE products (
  id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(255) NOT NULL,
  description VARCHAR(512),
  weight FLOAT,
  price DECIMAL(10, 2)
) AUTO_INCREMENT = 101;

CREATE TABLE orders (
  order_number INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY,
  order_date DATE NOT NULL,
  purchaser INTEGER NOT NULL,
  quantity INTEGER NOT NULL,
  product_id INTEGER NOT NULL,
  FOREIGN KEY order_customer (purchaser) REFERENCES customers(id),
  FOREIGN KEY ordered_product (product_id) REFERENCES products(id)
) AUTO_INCREMENT = 10001;

CREATE TABLE addresses (
  id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY,
  customer_id INTEGER NOT NULL,
  street VARCHAR(255) NOT NULL,
  city VARCHAR(255) NOT NULL,
  state VARCHAR(255) NOT NULL,
  zip VARCHAR(255) NOT NULL,
  type ENUM ('SHIPPING', 'BILLING', 'LIVING') NOT NULL,
  FOREIGN KEY address_customer (customer_id) REFERENCES customers(id)
) AUTO_INCREMENT = 10;

-- One column of every common MariaDB type.
CREATE TABLE all_types (
  id INTEGER NOT NULL PRIMARY KEY,
  c_tinyint TINYINT,
  c_smallint SMALLINT,
  c_mediumint MEDIUMINT,
  c_int INT,
  c_bigint BIGINT,
  c_bigint_unsigned BIGINT UNSIGNED,
  c_decimal DECIMAL(12, 3),
  c_decimal0 DECIMAL(20, 0),
  c_money DECIMAL(19, 4),
  c_float FLOAT,
  c_double DOUBLE,
  c_boolean BOOLEAN,
  c_char CHAR(3),
  c_varchar VARCHAR(20),
  c_text TEXT,
  c_date DATE,
  c_time TIME(6),
  c_datetime DATETIME,
  c_datetime3 DATETIME(3),
  c_datetime6 DATETIME(6),
  c_timestamp TIMESTAMP(6) NULL,
  c_year YEAR,
  c_json JSON,
  c_uuid UUID,
  c_blob BLOB,
  c_binary BINARY(3),
  c_enum ENUM ('sad', 'ok', 'happy'),
  c_set SET ('x', 'y', 'z'),
  c_bit BIT(8),
  c_point POINT,
  c_geometry GEOMETRY
);

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
  (1, -128, -32768, 8388607, 2147483647, 9223372036854775807, 18446744073709551615, -98765.432,
   12345678901234567890, 12.3400, 1.5, 2.25, TRUE, 'abc', 'varchar',
   'text with "quotes" and \\ backslash', '2024-03-01', '13:45:07.123456', '2024-03-01 13:45:07',
   '2024-03-01 13:45:07.123', '2024-03-01 13:45:07.123456', '2024-03-01 13:45:07.123456', 2024,
   '{"a": [1, 2]}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', X'0102FF', X'616263', 'happy', 'x,z',
   b'10100101', ST_PointFromText('POINT(1.5 2.5)'), ST_GeomFromText('POINT(1 1)')),
  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
