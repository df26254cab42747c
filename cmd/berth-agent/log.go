package main

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/logging"
)

// logFileName is the log file written in log.directory.
const logFileName = "agent.log"

// rotations maps log.rotation to the interval at which agent.log starts
// anew; 0 rotates by size only. Every file also rotates at log.max_size_mb.
var rotations = map[string]time.Duration{
	"daily":  24 * time.Hour, // the reference agent's default
	"hourly": time.Hour,
	"size":   0,
}

// openLog builds m.Logger from the [log] table: records go to stderr (text
// on a terminal, JSON otherwise, or as log.format says) and, with
// log.directory, also to agent.log there (JSON unless log.format is text),
// which rotates as log.rotation says and keeps log.max_backups files for
// log.max_age_days. Attributes that name secrets are masked in both.
func (m *Main) openLog() error {
	l := &m.Config.Log
	format := strings.ToLower(l.Format)
	stderr, err := logging.New(logging.Options{Level: l.Level, Format: format, Stderr: m.stderr()})
	if err != nil {
		return fmt.Errorf("log.level: %w", err)
	}
	if l.Directory == "" {
		m.Logger = stderr.Logger
		return nil
	}
	file, err := logging.New(logging.Options{
		Level:       l.Level,
		Format:      format,
		Dir:         l.Directory,
		File:        logFileName,
		MaxSizeMB:   l.MaxSizeMB,
		MaxAgeDays:  l.MaxAgeDays,
		MaxBackups:  l.MaxBackups,
		RotateEvery: rotations[strings.ToLower(l.Rotation)],
	})
	if err != nil {
		return fmt.Errorf("log.directory: %w", err)
	}
	m.logs = file
	m.Logger = slog.New(slog.NewMultiHandler(stderr.Handler(), file.Handler()))
	return nil
}

// RotateLog starts a new agent.log now (main calls it on SIGHUP); without
// log.directory it does nothing.
func (m *Main) RotateLog() error {
	m.closeMu.Lock()
	defer m.closeMu.Unlock()
	if m.logs == nil {
		return nil
	}
	return m.logs.Rotate()
}
