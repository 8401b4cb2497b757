// Command docker-context copies a Docker build context the way Docker sends it to the builder: every file of the
// source directory except what its .dockerignore excludes, matched by moby/patternmatcher, the library Docker and
// BuildKit themselves use. The image-build rehearsal (crates/deploy-check/tests/image_build.rs) builds in the copy.
//
//	docker-context SOURCE DESTINATION
package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: docker-context SOURCE DESTINATION")
		os.Exit(2)
	}
	if err := copyContext(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "docker-context:", err)
		os.Exit(1)
	}
}

func copyContext(source, destination string) error {
	var patterns []string
	if f, err := os.Open(filepath.Join(source, ".dockerignore")); err == nil {
		patterns, err = ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("reading .dockerignore: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	matcher, err := patternmatcher.New(patterns)
	if err != nil {
		return fmt.Errorf("parsing .dockerignore: %w", err)
	}
	return filepath.WalkDir(source, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		relative, err := filepath.Rel(source, path)
		if err != nil || relative == "." {
			return err
		}
		excluded, err := matcher.MatchesOrParentMatches(filepath.ToSlash(relative))
		if err != nil {
			return err
		}
		if excluded {
			if !entry.IsDir() {
				return nil
			}
			// A directory is skipped whole unless a `!pattern` may bring back something inside it (Docker's rule).
			prefix := filepath.ToSlash(relative) + "/"
			for _, pattern := range matcher.Patterns() {
				if pattern.Exclusion() && strings.HasPrefix(pattern.String()+"/", prefix) {
					return nil
				}
			}
			return filepath.SkipDir
		}
		target := filepath.Join(destination, relative)
		info, err := entry.Info()
		if err != nil {
			return err
		}
		switch {
		case entry.IsDir():
			return os.MkdirAll(target, info.Mode().Perm()|0o700)
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		default:
			return copyFile(path, target, info.Mode().Perm())
		}
	})
}

func copyFile(source, target string, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	in, err := os.Open(source)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
