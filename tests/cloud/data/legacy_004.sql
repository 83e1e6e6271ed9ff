-- A cloud database made by the hand-rolled migration runner (before Alembic), migrations 001..004,
-- with a little data: the upgrade test loads it and migrates it to the Alembic head.
BEGIN TRANSACTION;
CREATE TABLE case_actions (
            id INTEGER PRIMARY KEY,
            case_id INTEGER NOT NULL REFERENCES cases(id),
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            note TEXT,
            data_json TEXT
        );
CREATE TABLE cases (
            id INTEGER PRIMARY KEY,
            station TEXT NOT NULL REFERENCES stations(id),
            origin_node_id INTEGER NOT NULL REFERENCES grid_nodes(id),
            node_id INTEGER NOT NULL REFERENCES grid_nodes(id),
            level TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('open','assigned','feedback','closed')),
            reason TEXT NOT NULL,
            result_id TEXT NOT NULL,
            product TEXT NOT NULL,
            analyte TEXT NOT NULL,
            opened_at TEXT NOT NULL,
            deadline TEXT NOT NULL,
            assignee TEXT,
            closed_at TEXT,
            escalations INTEGER NOT NULL DEFAULT 0,
            reminded TEXT NOT NULL DEFAULT 'none',
            updated_at TEXT NOT NULL
        );
CREATE TABLE certificates (
            number TEXT PRIMARY KEY,
            station TEXT NOT NULL,
            root_code TEXT NOT NULL,
            sample_id TEXT NOT NULL REFERENCES samples(id),
            issued_at TEXT NOT NULL,
            summary_json TEXT NOT NULL,
            revoked_at TEXT,
            UNIQUE (station, root_code)
        );
CREATE TABLE configs (
            id INTEGER PRIMARY KEY,
            station TEXT NOT NULL REFERENCES stations(id),
            version TEXT NOT NULL,
            issued_at TEXT NOT NULL,
            issued_by TEXT NOT NULL,
            target_node_id INTEGER NOT NULL REFERENCES grid_nodes(id),
            payload_json TEXT NOT NULL,
            published_at TEXT
        );
CREATE TABLE dead_letters (
            id INTEGER PRIMARY KEY,
            received_at TEXT NOT NULL,
            topic TEXT NOT NULL,
            payload TEXT NOT NULL,
            reason TEXT NOT NULL,
            station TEXT,
            result_id TEXT
        );
CREATE TABLE grid_nodes (
            id INTEGER PRIMARY KEY,
            level TEXT NOT NULL CHECK (level IN ('county','town','village','station')),
            code TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            parent_id INTEGER REFERENCES grid_nodes(id),
            path TEXT NOT NULL,
            grid_head TEXT,
            information_officer TEXT,
            co_manager TEXT
        );
INSERT INTO "grid_nodes" VALUES(1,'county','370214','城阳区',NULL,'/1/',NULL,NULL,NULL);
INSERT INTO "grid_nodes" VALUES(2,'town','370214101','棘洪滩街道',1,'/1/2/',NULL,NULL,NULL);
INSERT INTO "grid_nodes" VALUES(3,'village','370214101203','南万社区',2,'/1/2/3/',NULL,NULL,NULL);
INSERT INTO "grid_nodes" VALUES(4,'station','370214101203-01','南万服务站',3,'/1/2/3/4/',NULL,NULL,NULL);
CREATE TABLE producers (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('企业','合作社','家庭农场','种养大户','个人')),
            name TEXT NOT NULL,
            code TEXT NOT NULL UNIQUE,
            village_node_id INTEGER NOT NULL REFERENCES grid_nodes(id),
            contact TEXT,
            phone TEXT,
            products_json TEXT NOT NULL,
            plots_json TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
CREATE TABLE results (
            id TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,
            station TEXT NOT NULL REFERENCES stations(id),
            node_id INTEGER NOT NULL REFERENCES grid_nodes(id),
            instrument_serial TEXT NOT NULL,
            instrument_model TEXT NOT NULL,
            instrument_driver TEXT NOT NULL,
            sample_id TEXT NOT NULL,
            product TEXT NOT NULL,
            producer TEXT,
            sampled_at TEXT,
            method TEXT NOT NULL,
            analyte TEXT NOT NULL,
            channel INTEGER NOT NULL,
            measured_at TEXT NOT NULL,
            verdict TEXT NOT NULL,
            values_json TEXT NOT NULL,
            qc_json TEXT NOT NULL,
            algorithm TEXT NOT NULL,
            config_version TEXT NOT NULL,
            raw_json TEXT,
            operator TEXT,
            sig TEXT NOT NULL,
            received_at TEXT NOT NULL
        );
INSERT INTO "results" VALUES('0190f0c0-0000-7000-8000-000000000001',1,'370214101203-01',4,'GR-1','KJ-G8','gold-serial','S-1','韭菜',NULL,NULL,'gold','imidacloprid',1,'2026-11-01T01:00:00+00:00','negative','{}','[]','gold/1.0','1',NULL,NULL,'sig','2026-11-01T01:00:01+00:00');
INSERT INTO "results" VALUES('0190f0c0-0000-7000-8000-000000000002',2,'370214101203-01',4,'GR-1','KJ-G8','gold-serial','S-2','韭菜',NULL,NULL,'gold','imidacloprid',1,'2026-11-01T02:00:00+00:00','positive','{}','[]','gold/1.0','1',NULL,NULL,'sig','2026-11-01T02:00:01+00:00');
CREATE TABLE samples (
            id TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,
            station TEXT NOT NULL REFERENCES stations(id),
            node_id INTEGER NOT NULL REFERENCES grid_nodes(id),
            code TEXT NOT NULL,
            root_code TEXT NOT NULL,
            producer_id INTEGER NOT NULL REFERENCES producers(id),
            product TEXT NOT NULL,
            batch TEXT NOT NULL,
            plot TEXT,
            quantity_kg REAL NOT NULL,
            market_date TEXT,
            sampler TEXT NOT NULL,
            registered_at TEXT NOT NULL,
            retest_of TEXT,
            status TEXT NOT NULL CHECK (status IN ('pending','released','held','retest')),
            decided_at TEXT,
            received_at TEXT NOT NULL,
            sig TEXT NOT NULL,
            UNIQUE (station, code)
        );
CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL);
INSERT INTO "schema_migrations" VALUES('001_initial','2026-12-06T23:13:05.322+00:00');
INSERT INTO "schema_migrations" VALUES('002_station_previous_key','2026-12-06T23:13:05.323+00:00');
INSERT INTO "schema_migrations" VALUES('003_producers','2026-12-06T23:13:05.324+00:00');
INSERT INTO "schema_migrations" VALUES('004_samples','2026-12-06T23:13:05.324+00:00');
CREATE TABLE seq_gaps (
            id INTEGER PRIMARY KEY,
            station TEXT NOT NULL,
            first_seq INTEGER NOT NULL,
            last_seq INTEGER NOT NULL,
            detected_at TEXT NOT NULL,
            closed_at TEXT
        );
CREATE TABLE stations (
            id TEXT PRIMARY KEY,
            node_id INTEGER NOT NULL UNIQUE REFERENCES grid_nodes(id),
            key TEXT NOT NULL,
            mqtt_username TEXT NOT NULL UNIQUE,
            mqtt_password_hash TEXT NOT NULL,
            enrolled_at TEXT NOT NULL,
            last_seen TEXT,
            online INTEGER NOT NULL DEFAULT 0,
            backlog INTEGER,
            oldest_unsent_age_s REAL,
            free_disk_bytes INTEGER,
            config_version TEXT,
            status_at TEXT,
            status_json TEXT,
            high_seq INTEGER NOT NULL DEFAULT 0
        , previous_key TEXT, previous_key_until TEXT);
INSERT INTO "stations" VALUES('370214101203-01',4,'00ff','st-370214101203-01','$7$x','2026-11-01T08:00:00+00:00',NULL,0,NULL,NULL,NULL,NULL,NULL,NULL,2,NULL,NULL);
CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL CHECK (role IN ('admin','county','town','village','station')),
            node_id INTEGER REFERENCES grid_nodes(id),
            token_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL
        );
INSERT INTO "users" VALUES(1,'admin','admin',NULL,'ab12','2026-11-01T08:00:00+00:00');
CREATE INDEX idx_grid_nodes_parent ON grid_nodes(parent_id);
CREATE INDEX idx_grid_nodes_path ON grid_nodes(path);
CREATE INDEX idx_results_station_seq ON results(station, seq);
CREATE INDEX idx_results_measured ON results(measured_at);
CREATE INDEX idx_results_node_measured ON results(node_id, measured_at);
CREATE INDEX idx_results_analyte ON results(analyte, measured_at);
CREATE INDEX idx_results_product ON results(product, measured_at);
CREATE INDEX idx_results_verdict ON results(verdict, measured_at);
CREATE INDEX idx_seq_gaps_station ON seq_gaps(station, closed_at);
CREATE INDEX idx_dead_letters_received ON dead_letters(received_at);
CREATE INDEX idx_cases_status_deadline ON cases(status, deadline);
CREATE INDEX idx_cases_origin ON cases(origin_node_id);
CREATE INDEX idx_cases_key ON cases(station, product, analyte, status);
CREATE INDEX idx_case_actions_case ON case_actions(case_id, id);
CREATE INDEX idx_configs_station ON configs(station, id);
CREATE INDEX idx_producers_village ON producers(village_node_id);
CREATE INDEX idx_samples_root ON samples(station, root_code);
CREATE INDEX idx_samples_producer ON samples(producer_id, registered_at);
CREATE INDEX idx_samples_node ON samples(node_id, registered_at);
CREATE INDEX idx_results_station_sample ON results(station, sample_id);
COMMIT;
