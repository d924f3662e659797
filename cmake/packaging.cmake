# Installation (cmake --install) and the Debian package (cpack -G DEB).

include(GNUInstallDirs)

install(TARGETS legate legate-control RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# User documentation and the example bootstraps, in share/doc/legate.
file(GLOB LEGATE_DOCS ${CMAKE_SOURCE_DIR}/docs/*.md)
install(FILES ${LEGATE_DOCS} DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY ${CMAKE_SOURCE_DIR}/docs/filters ${CMAKE_SOURCE_DIR}/docs/examples
        DESTINATION ${CMAKE_INSTALL_DOCDIR})

# The systemd units run /usr/bin/legate and /usr/bin/legate-control: the
# package's paths (and those of cmake --install --prefix /usr). They are
# installed, never enabled or started.
install(FILES ${CMAKE_SOURCE_DIR}/packaging/legate.service
              ${CMAKE_SOURCE_DIR}/packaging/legate-control.service
        DESTINATION lib/systemd/system)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME legate)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "Envoy-compatible data plane (xDS v3, mTLS, HTTP/1.1 and HTTP/2) and a sample control plane")
set(CPACK_PACKAGE_CONTACT "legate maintainers <legate@localhost>")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Library dependencies come from dpkg-shlibdeps on the binaries; adduser is
# for the postinst.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS adduser)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/packaging/debian/postinst
    ${CMAKE_SOURCE_DIR}/packaging/debian/prerm
    ${CMAKE_SOURCE_DIR}/packaging/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
