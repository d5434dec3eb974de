-- The MariaDB user Debezium connects as (demo/connect/inventory-mariadb.json), with the
-- privileges its documentation lists. Used by docker-compose.yml and scripts/lib.sh.
CREATE USER 'debezium'@'%' IDENTIFIED BY 'dbz';
GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR, LOCK TABLES ON *.* TO 'debezium'@'%';
